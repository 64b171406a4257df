//! The packed weight layout: GGUF quantized blocks rearranged once at load time so that SIMD
//! kernels read 16 weight rows at a time with plain aligned-ish 64-byte loads.
//!
//! Rows are taken in groups of 16 (`ROWS`; a short last group is padded with zero blocks). For
//! each group and each block along k (32 elements, or 256 for K-quants) there is one *tile*:
//! the 16 rows' scales side by side, then the quant bytes "dword-transposed": the GGUF bytes of
//! each row are cut into 4-byte pieces and piece `i` of rows 0..15 forms 64-byte vector `i`.
//! A dword of an int8 activation broadcast against such a vector gives one dot-product lane per
//! weight row (`vpdpbusd`), and the nibble/bit structure inside each row's bytes stays exactly as
//! ggml has it, so unpacking is the same shifts and masks as in ggml. The fifth bit of Q5 formats
//! is pre-arranged as one 64-bit mask per unpacked 64-byte vector (bit 4*row + lane). Q4_K/Q5_K
//! 6-bit scales and minimums stay 6-bit (a nibble plane and a 2-bit plane, `six_bit_at`) so the
//! tile is no larger than the file's blocks; kernels widen them to bytes once per tile. Q6_K is
//! the one format whose codes are rearranged: each 4-code group of a row becomes 3 bytes, three
//! whole 6-bit codes with the fourth's bits on top (`q6k_at`), which unpacks in fewer operations
//! than ggml's nibble and 2-bit planes. Q5_K and Q6_K interleave their parts in the order the
//! kernels read them, so each tile is one sequential stream (with separate planes the hardware
//! prefetcher fell behind and decode ran at half the bandwidth). A tile is exactly as large as its
//! 16 GGUF blocks, so decode reads no more bytes than the file holds.
//!
//! Also here: the one scalar definition of what the layout means (`unpack_block`, `dequantize_row`),
//! used by the scalar kernel, by embedding lookups, and by tests against ggml's own decoding.
//! Not here: any arithmetic with activations.

use crate::buffer::Buffer;
use half::f16;

/// Weight rows per group (lanes of one 512-bit vector of int32 dot products).
pub const ROWS: usize = 16;
/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

/// GGUF block formats the kernels handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl Format {
    pub const ALL: [Format; 8] =
        [Format::Q4_0, Format::Q4_1, Format::Q5_0, Format::Q5_1, Format::Q8_0, Format::Q4K, Format::Q5K, Format::Q6K];

    pub fn name(self) -> &'static str {
        match self {
            Format::Q4_0 => "Q4_0",
            Format::Q4_1 => "Q4_1",
            Format::Q5_0 => "Q5_0",
            Format::Q5_1 => "Q5_1",
            Format::Q8_0 => "Q8_0",
            Format::Q4K => "Q4_K",
            Format::Q5K => "Q5_K",
            Format::Q6K => "Q6_K",
        }
    }

    /// Elements per block along k.
    pub fn block_len(self) -> usize {
        if self.is_kquant() {
            QK_K
        } else {
            32
        }
    }

    pub fn is_kquant(self) -> bool {
        matches!(self, Format::Q4K | Format::Q5K | Format::Q6K)
    }

    /// Bytes of one GGUF block.
    pub fn gguf_block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q5_0 => 22,
            Format::Q5_1 => 24,
            Format::Q8_0 => 34,
            Format::Q4K => 144,
            Format::Q5K => 176,
            Format::Q6K => 210,
        }
    }

    /// Bytes of one packed tile (16 rows x one block). Offsets inside a tile are in `Tile`.
    pub fn tile_bytes(self) -> usize {
        let t = Tile::of(self);
        t.end
    }

    /// The constant the weights' unsigned codes carry (value = code - offset): activations
    /// subtract `offset * sum(a)` once per block instead of the kernel re-centering every weight.
    /// Q8_0 codes are stored with the sign bit flipped (code = value + 128) so they can be the
    /// unsigned operand of `vpdpbusd`.
    pub fn code_offset(self) -> i32 {
        match self {
            Format::Q4_0 => 8,
            Format::Q5_0 => 16,
            Format::Q8_0 => 128,
            Format::Q6K => 32,
            _ => 0,
        }
    }
}

/// Byte offsets of the parts of a tile; absent parts are `usize::MAX`.
#[derive(Clone, Copy, Debug)]
pub struct Tile {
    /// 16 f16 row scales (`d`).
    pub d: usize,
    /// 16 f16 row minimums (`m` for Q4_1/Q5_1, `dmin` for Q4_K/Q5_K).
    pub m: usize,
    /// K-quants: sub-block scales, [sub-block][row] (i8 for Q6_K; for Q4_K/Q5_K 6-bit values in
    /// the planes of `six_bit_at`, 96 bytes, that widen to u8 in this order).
    pub sc: usize,
    /// Q4_K/Q5_K: sub-block minimums, [pair of sub-blocks][row][2] (an i16 pair per lane once
    /// widened), 6-bit planes like `sc`.
    pub mn: usize,
    /// Q5 formats: fifth-bit masks, one u64 per unpacked vector (bit 4*row + lane).
    pub hb: usize,
    /// Low quant bytes (nibbles, or whole int8 codes for Q8_0), dword-transposed; Q6_K: its
    /// code chunks (`q6k_at`).
    pub qs: usize,
    pub end: usize,
}

impl Tile {
    pub const fn of(f: Format) -> Tile {
        const NO: usize = usize::MAX;
        match f {
            Format::Q4_0 => Tile { d: 0, m: NO, sc: NO, mn: NO, hb: NO, qs: 32, end: 32 + 256 },
            Format::Q4_1 => Tile { d: 0, m: 32, sc: NO, mn: NO, hb: NO, qs: 64, end: 64 + 256 },
            Format::Q5_0 => Tile { d: 0, m: NO, sc: NO, mn: NO, hb: 32, qs: 96, end: 96 + 256 },
            Format::Q5_1 => Tile { d: 0, m: 32, sc: NO, mn: NO, hb: 64, qs: 128, end: 128 + 256 },
            Format::Q8_0 => Tile { d: 0, m: NO, sc: NO, mn: NO, hb: NO, qs: 32, end: 32 + 512 },
            Format::Q4K => Tile { d: 0, m: 32, sc: 64, mn: 160, hb: NO, qs: 256, end: 256 + 2048 },
            // Q5_K and Q6_K interleave their parts in the order the kernels read them (one
            // sequential stream per tile keeps the hardware prefetcher ahead): use `qs_at`,
            // `hb_at`, `q6k_at` for their offsets.
            Format::Q5K => Tile { d: 0, m: 32, sc: 64, mn: 160, hb: 256, qs: 256, end: 256 + 2560 },
            Format::Q6K => Tile { d: 0, m: NO, sc: 32, mn: NO, hb: NO, qs: 288, end: 288 + 3072 },
        }
    }
}

/// Offset in a tile of 64-byte piece `i` of the low-bits plane (nibbles, or Q8_0's codes).
/// Q5_K: per 64 elements jj, [fifth-bit masks lo, hi][8 pieces]. Not Q6_K (`q6k_at`).
#[inline(always)]
pub const fn qs_at(f: Format, i: usize) -> usize {
    match f {
        Format::Q5K => 256 + (i / 8) * 640 + 128 + (i % 8) * 64,
        _ => Tile::of(f).qs + 64 * i,
    }
}

/// Bytes of one 6-bit plane pair: 128 values (16 rows x 8 sub-blocks).
pub const SIX_BIT_BYTES: usize = 96;

/// Where 6-bit value `o` (0..128, in widened order) of a plane pair lives: bits 0..3 are nibble
/// `o / 64` of byte `o % 64`, bits 4..5 are bit pair `o / 32` of byte `64 + o % 32`. So one 64-byte
/// load of the nibbles and one broadcast 32-byte load of the pairs widen all 128 values with a
/// few shifts and masks (and two 32-byte halves each on AVX2).
#[inline(always)]
pub const fn six_bit_at(o: usize) -> ((usize, u32), (usize, u32)) {
    ((o % 64, 4 * (o / 64) as u32), (64 + o % 32, 2 * (o / 32) as u32))
}

fn put_six_bit(p: &mut [u8], o: usize, v: u8) {
    let ((lo, ls), (hi, hs)) = six_bit_at(o);
    p[lo] |= (v & 0xF) << ls;
    p[hi] |= (v >> 4) << hs;
}

/// Offset in a tile of the fifth-bit mask (a u64) of unpacked vector `v` (Q5 formats; v = 2i + h
/// for nibble h of piece i).
#[inline(always)]
pub const fn hb_at(f: Format, v: usize) -> usize {
    match f {
        Format::Q5K => {
            let (i, h) = (v / 2, v % 2);
            256 + (i / 8) * 640 + h * 64 + (i % 8) * 8
        }
        _ => Tile::of(f).hb + 8 * v,
    }
}

/// Q6_K: offset in a tile of chunk `v = 8h + c` (v = 0..16, in the order the kernels read them),
/// which holds the codes of elements 128h + 32t + 4c + e (t, e = 0..4) of the 16 rows as three
/// dword-transposed 64-byte vectors: byte 4r + e of vector j (j = 0..3) is row r's code for t = j
/// in bits 0..5 and bits 2j..2j+1 of its code for t = 3 in bits 6..7. So the codes of t = 0..3
/// are one mask each, and t = 3 three shifts and three logic ops, where ggml's planes (a nibble
/// plane and a 2-bit plane) cost five shifts and eight logic ops per four vectors of codes.
#[inline(always)]
pub const fn q6k_at(v: usize) -> usize {
    Tile::of(Format::Q6K).qs + 192 * v
}

/// A weight matrix (n rows of k elements, GGUF row-major) in the packed layout.
pub struct PackedMatrix {
    format: Format,
    n: usize,
    k: usize,
    groups: usize,
    blocks: usize,
    data: Buffer,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedMatrix({} {}x{})", self.format.name(), self.n, self.k)
    }
}

fn rd_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// ggml's `get_scale_min_k4`: the j-th 6-bit scale and minimum of a Q4_K/Q5_K super-block.
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

impl PackedMatrix {
    /// Pack `n` rows of `k` elements given as raw GGUF blocks (what `QTensor::data()` returns).
    pub fn from_gguf(format: Format, n: usize, k: usize, bytes: &[u8]) -> Result<Self, String> {
        let bl = format.block_len();
        if k == 0 || n == 0 || !k.is_multiple_of(bl) {
            return Err(format!("{}: row length {k} is not a positive multiple of {bl}", format.name()));
        }
        let blocks = k / bl;
        let row_bytes = blocks * format.gguf_block_bytes();
        if bytes.len() != n * row_bytes {
            return Err(format!("{}: {} bytes for a {n}x{k} matrix, expected {}", format.name(), bytes.len(), n * row_bytes));
        }
        let groups = n.div_ceil(ROWS);
        let tile = format.tile_bytes();
        let total = groups * blocks * tile;
        // Rounded up to whole cache lines: kernels may read a full 64-byte line at the end.
        let mut data = Buffer::zeroed(total.div_ceil(64) * 64);
        let out = data.as_mut_slice();
        let gb = format.gguf_block_bytes();
        let group_bytes = blocks * tile;
        let out = crate::pool::SendPtr(out.as_mut_ptr());
        // Groups are independent; a 3B model's worth of packing runs on all cores.
        crate::pool::for_each(groups, |g| {
            // SAFETY: each group writes only its own tiles.
            let out = unsafe { std::slice::from_raw_parts_mut(out.get().add(g * group_bytes), group_bytes) };
            for b in 0..blocks {
                let t = &mut out[b * tile..][..tile];
                for r in 0..ROWS {
                    let row = g * ROWS + r;
                    if row < n {
                        pack_block(format, &bytes[row * row_bytes + b * gb..][..gb], r, t);
                    } else if format == Format::Q8_0 {
                        // Padding rows must decode to zero codes too (their scale is 0 anyway).
                        pack_block(format, &[0u8; 34], r, t);
                    }
                }
            }
        });
        Ok(Self { format, n, k, groups, blocks, data })
    }

    pub fn format(&self) -> Format {
        self.format
    }
    /// Output features (rows).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input features (row length).
    pub fn k(&self) -> usize {
        self.k
    }
    pub fn groups(&self) -> usize {
        self.groups
    }
    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.blocks
    }
    pub fn size_in_bytes(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// The tile of group `g`, block `b`.
    pub(crate) fn tile(&self, g: usize, b: usize) -> &[u8] {
        let t = self.format.tile_bytes();
        &self.bytes()[(g * self.blocks + b) * t..][..t]
    }

    /// Start of group `g`'s tiles (blocks follow each other, `tile_bytes` apart).
    pub(crate) fn group_ptr(&self, g: usize) -> *const u8 {
        self.tile(g, 0).as_ptr()
    }

    /// Row `row` as f32, bit-identical to ggml's (and candle's) dequantization.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(row < self.n && out.len() == self.k, "dequantize_row: row {row} of {}, buffer {}", self.n, out.len());
        let (g, r) = (row / ROWS, row % ROWS);
        let bl = self.format.block_len();
        let mut q = [0i8; QK_K];
        for b in 0..self.blocks {
            let t = self.tile(g, b);
            unpack_block(self.format, t, r, &mut q[..bl]);
            let o = &mut out[b * bl..][..bl];
            let f = |at: usize| f16::from_bits(rd_u16(t, at + 2 * r)).to_f32();
            let lay = Tile::of(self.format);
            match self.format {
                // Codes are unsigned in the file; ggml computes (code - offset) * d.
                Format::Q4_0 | Format::Q5_0 | Format::Q8_0 => {
                    let d = f(lay.d);
                    for (o, &q) in o.iter_mut().zip(&q[..bl]) {
                        *o = q as f32 * d;
                    }
                }
                Format::Q4_1 | Format::Q5_1 => {
                    let (d, m) = (f(lay.d), f(lay.m));
                    for (o, &q) in o.iter_mut().zip(&q[..bl]) {
                        *o = q as f32 * d + m;
                    }
                }
                Format::Q4K | Format::Q5K => {
                    let (d, dmin) = (f(lay.d), f(lay.m));
                    for s in 0..8 {
                        let (sc, mn) = kquant_scale_min(t, r, s);
                        let (d1, m1) = (d * sc as f32, dmin * mn as f32);
                        for i in 32 * s..32 * s + 32 {
                            o[i] = d1 * q[i] as f32 - m1;
                        }
                    }
                }
                Format::Q6K => {
                    let d = f(lay.d);
                    for j in 0..16 {
                        let sc = t[lay.sc + 16 * j + r] as i8;
                        for i in 16 * j..16 * j + 16 {
                            o[i] = d * sc as f32 * q[i] as f32;
                        }
                    }
                }
            }
        }
    }
}

/// Q4_K/Q5_K sub-block `s` scale and minimum of row `r` in a tile.
pub(crate) fn kquant_scale_min(t: &[u8], r: usize, s: usize) -> (u8, u8) {
    let lay = Tile::of(Format::Q4K);
    let six = |at: usize, o: usize| {
        let ((lo, ls), (hi, hs)) = six_bit_at(o);
        (t[at + lo] >> ls) & 0xF | ((t[at + hi] >> hs) & 3) << 4
    };
    (six(lay.sc, ROWS * s + r), six(lay.mn, 32 * (s / 2) + 2 * r + (s % 2)))
}

/// Row `r`'s f16 value at tile offset `at` (a [row] f16 array).
pub(crate) fn tile_f16(t: &[u8], at: usize, r: usize) -> f32 {
    f16::from_bits(rd_u16(t, at + 2 * r)).to_f32()
}

/// Put one GGUF block of row `r` into its tile.
fn pack_block(f: Format, src: &[u8], r: usize, t: &mut [u8]) {
    let lay = Tile::of(f);
    let put_f16 = |t: &mut [u8], at: usize, from: usize| t[at + 2 * r..at + 2 * r + 2].copy_from_slice(&src[from..from + 2]);
    // Dword-transpose `bytes`: piece i goes to the vector at tile offset `at(i)`.
    let transpose = |t: &mut [u8], at: &dyn Fn(usize) -> usize, bytes: &[u8], xor: u32| {
        for (i, piece) in bytes.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes(piece.try_into().unwrap()) ^ xor;
            t[at(i) + 4 * r..][..4].copy_from_slice(&v.to_le_bytes());
        }
    };
    let qs = |i| qs_at(f, i);
    // Fifth-bit masks: row r owns bits 4r..4r+4 of each vector's u64, i.e. one nibble.
    let put_mask = |t: &mut [u8], v: usize, bits4: u32| t[hb_at(f, v) + r / 2] |= (bits4 as u8 & 0xF) << (4 * (r % 2));
    match f {
        Format::Q4_0 => {
            put_f16(t, lay.d, 0);
            transpose(t, &qs, &src[2..18], 0);
        }
        Format::Q4_1 => {
            put_f16(t, lay.d, 0);
            put_f16(t, lay.m, 2);
            transpose(t, &qs, &src[4..20], 0);
        }
        Format::Q5_0 | Format::Q5_1 => {
            let (qh_at, qs_at) = if f == Format::Q5_0 { (2, 6) } else { (4, 8) };
            put_f16(t, lay.d, 0);
            if f == Format::Q5_1 {
                put_f16(t, lay.m, 2);
            }
            let qh = u32::from_le_bytes(src[qh_at..qh_at + 4].try_into().unwrap());
            // Unpacked vector 2i+h holds elements 16h + 4i + e (h: low/high nibble of piece i);
            // their fifth bits are bits 16h + 4i + e of qh.
            for v in 0..8 {
                put_mask(t, v, qh >> (16 * (v % 2) + 4 * (v / 2)));
            }
            transpose(t, &qs, &src[qs_at..qs_at + 16], 0);
        }
        Format::Q8_0 => {
            put_f16(t, lay.d, 0);
            transpose(t, &qs, &src[2..34], 0x8080_8080);
        }
        Format::Q4K | Format::Q5K => {
            put_f16(t, lay.d, 0);
            put_f16(t, lay.m, 2);
            let scales = &src[4..16];
            for s in 0..8 {
                let (sc, mn) = scale_min_k4(s, scales);
                put_six_bit(&mut t[lay.sc..], ROWS * s + r, sc);
                put_six_bit(&mut t[lay.mn..], 32 * (s / 2) + 2 * r + (s % 2), mn);
            }
            if f == Format::Q4K {
                transpose(t, &qs, &src[16..144], 0);
            } else {
                // Piece i = 8j + c holds elements 64j + 32h + 4c + e (h: nibble); their fifth
                // bit is bit 2j + h of qh[4c + e].
                let qh = &src[16..48];
                for c in 0..8 {
                    let q4 = u32::from_le_bytes(qh[4 * c..4 * c + 4].try_into().unwrap());
                    for j in 0..4 {
                        for h in 0..2 {
                            let sh = 2 * j + h;
                            let bits = (q4 >> sh) & 1 | (q4 >> (8 + sh) & 1) << 1 | (q4 >> (16 + sh) & 1) << 2 | (q4 >> (24 + sh) & 1) << 3;
                            put_mask(t, 2 * (8 * j + c) + h, bits);
                        }
                    }
                }
                transpose(t, &qs, &src[48..176], 0);
            }
        }
        Format::Q6K => {
            put_f16(t, lay.d, 208);
            for j in 0..16 {
                t[lay.sc + ROWS * j + r] = src[192 + j];
            }
            // ggml's codes (dequantize_row_q6_K): element 128n + 32t + l, l < 32, has the low
            // nibble of ql[64n + 32(t % 2) + l] (t < 2: low nibble, else high) and bits 2t..2t+1
            // of qh[32n + l] on top.
            let (ql, qh) = (&src[0..128], &src[128..192]);
            let code = |i: usize| {
                let (n, t, l) = (i / 128, (i / 32) % 4, i % 32);
                let lo = ql[64 * n + 32 * (t % 2) + l] >> (4 * (t / 2)) & 0xF;
                lo | ((qh[32 * n + l] >> (2 * t)) & 3) << 4
            };
            for v in 0..16 {
                let (h, c) = (v / 8, v % 8);
                for j in 0..3 {
                    for e in 0..4 {
                        let base = 128 * h + 4 * c + e;
                        t[q6k_at(v) + 64 * j + 4 * r + e] = code(base + 32 * j) | ((code(base + 96) >> (2 * j)) & 3) << 6;
                    }
                }
            }
        }
    }
}

/// Row `r`'s signed integer weights of one tile, in element order: the code minus the format's
/// offset (Q4_0: q-8, Q5_0: q-16, Q8_0: q, Q6_K: q-32; Q4_1/Q5_1/Q4_K/Q5_K: the unsigned q, whose
/// minimum is applied separately). `q.len()` is the block length.
pub fn unpack_block(f: Format, t: &[u8], r: usize, q: &mut [i8]) {
    // Byte e of piece i of this row.
    let qs = |i: usize, e: usize| t[qs_at(f, i) + 4 * r + e];
    let hbit = |v: usize, e: usize| {
        let pos = 4 * r + e;
        (t[hb_at(f, v) + pos / 8] >> (pos % 8)) & 1
    };
    let off = f.code_offset();
    match f {
        Format::Q4_0 | Format::Q4_1 | Format::Q5_0 | Format::Q5_1 => {
            let five = matches!(f, Format::Q5_0 | Format::Q5_1);
            for i in 0..4 {
                for e in 0..4 {
                    let b = qs(i, e);
                    let (mut lo, mut hi) = (b & 0xF, b >> 4);
                    if five {
                        lo |= hbit(2 * i, e) << 4;
                        hi |= hbit(2 * i + 1, e) << 4;
                    }
                    q[4 * i + e] = (lo as i32 - off) as i8;
                    q[16 + 4 * i + e] = (hi as i32 - off) as i8;
                }
            }
        }
        Format::Q8_0 => {
            for i in 0..8 {
                for e in 0..4 {
                    q[4 * i + e] = (qs(i, e) as i32 - off) as i8;
                }
            }
        }
        Format::Q4K | Format::Q5K => {
            for i in 0..32 {
                let (j, c) = (i / 8, i % 8);
                for e in 0..4 {
                    let b = qs(i, e);
                    let (mut lo, mut hi) = (b & 0xF, b >> 4);
                    if f == Format::Q5K {
                        lo |= hbit(2 * i, e) << 4;
                        hi |= hbit(2 * i + 1, e) << 4;
                    }
                    q[64 * j + 4 * c + e] = lo as i8;
                    q[64 * j + 32 + 4 * c + e] = hi as i8;
                }
            }
        }
        Format::Q6K => {
            // See `q6k_at`.
            for v in 0..16 {
                let (h, c) = (v / 8, v % 8);
                for e in 0..4 {
                    let b: [u8; 3] = std::array::from_fn(|j| t[q6k_at(v) + 64 * j + 4 * r + e]);
                    let top = (b[0] >> 6) | (b[1] >> 6) << 2 | (b[2] >> 6) << 4;
                    for (tt, code) in [b[0] & 0x3F, b[1] & 0x3F, b[2] & 0x3F, top].into_iter().enumerate() {
                        q[128 * h + 32 * tt + 4 * c + e] = (code as i32 - off) as i8;
                    }
                }
            }
        }
    }
}
