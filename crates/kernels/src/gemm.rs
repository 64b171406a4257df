//! Quantized matmul driver: y (m x n) = x (m x k, f32) . W^T for a packed weight matrix W (n x k).
//!
//! Activations are quantized once per call (acts.rs). m = 1 (decode) is a GEMV; m > 1 (prefill)
//! is blocked: activation rows are taken in chunks small enough to stay in L2 beside one weight
//! group, and within a chunk each 16-row weight group is read once and multiplied against the
//! chunk's rows `MT_MAX` at a time by a micro-kernel (scalar.rs, avx2.rs, avx512.rs). Long
//! prompts therefore stream the weights once per chunk, not once per token.
//! Work items (a chunk x a run of weight groups) are shared out over the thread pool.
//! Not here: the arithmetic itself, float (bf16/f16) weights (float.rs).

use crate::acts::Acts;
use crate::dispatch::Isa;
use crate::layout::{PackedMatrix, ROWS};
use crate::pool::{self, SendPtr};
use std::cell::RefCell;

/// Most activation rows one micro-kernel call handles.
pub const MT_MAX: usize = 8;
/// A micro-kernel's output: [activation row][weight row of the group].
pub type Out = [[f32; ROWS]; MT_MAX];

/// Bytes of quantized activations a chunk may occupy: about half of a 1 MiB L2, next to the
/// weight group being multiplied (16 rows x k, ~100 KiB at k = 10496 in Q4_0).
const CHUNK_BYTES: usize = 512 << 10;

/// Most matrices one `matmul_many` call takes (q, k and v are the most the model passes).
pub const MANY_MAX: usize = 4;

thread_local! {
    /// Quantized-activation buffers of the calling thread, reused across calls.
    static ACTS: RefCell<Acts> = RefCell::new(Acts::default());
}

/// y = x . W^T with x of shape (m, w.k()) and y of shape (m, w.n()), both row-major.
pub fn matmul(isa: Isa, w: &PackedMatrix, x: &[f32], m: usize, y: &mut [f32]) {
    matmul_many(isa, &[w], x, m, &mut [y]);
}

/// Several matrices of one format and row length applied to the same x (q, k and v; gate and
/// up): `ys[i] = x . ws[i]^T`. x is quantized once and all the products share one pool call, so a
/// decode step pays the activation quantization and the call's start and tail once per input
/// instead of once per matrix. Results are identical to separate `matmul` calls. At most
/// `MANY_MAX` matrices.
pub fn matmul_many(isa: Isa, ws: &[&PackedMatrix], x: &[f32], m: usize, ys: &mut [&mut [f32]]) {
    matmul_many_streams(isa, crate::dispatch::decode_streams(), ws, x, m, ys)
}

/// `matmul_many` with the number of weight streams per core in decode set explicitly (1 or 2;
/// `decode_streams` picks it otherwise). Results do not depend on it.
pub fn matmul_many_streams(isa: Isa, streams: usize, ws: &[&PackedMatrix], x: &[f32], m: usize, ys: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), ys.len(), "matmul: {} matrices for {} outputs", ws.len(), ys.len());
    assert!(ws.len() <= MANY_MAX, "matmul: at most {MANY_MAX} matrices per call");
    let Some(w0) = ws.first() else { return };
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert!(w.format() == w0.format() && w.k() == w0.k(), "matmul: matrices differ in format or k");
        assert_eq!(y.len(), m * w.n(), "matmul: y has {} values, expected {m}x{}", y.len(), w.n());
    }
    assert_eq!(x.len(), m * w0.k(), "matmul: x has {} values, expected {m}x{}", x.len(), w0.k());
    assert!(isa.is_supported(), "matmul: the {} path cannot run on this CPU", isa.name());
    if m == 0 {
        return;
    }
    ACTS.with(|a| {
        // A re-entrant call on this thread (not expected) gets its own buffers.
        let mut fresh = Acts::default();
        let mut guard = a.try_borrow_mut();
        let acts = match guard.as_mut() {
            Ok(g) => &mut **g,
            Err(_) => &mut fresh,
        };
        acts.quantize(w0.format(), x, m, w0.k(), isa);
        // Fixed-size, so a decode step allocates nothing here.
        let mut outs = [(*w0, SendPtr(std::ptr::null_mut())); MANY_MAX];
        for (o, (w, y)) in outs.iter_mut().zip(ws.iter().zip(ys.iter_mut())) {
            *o = (*w, SendPtr(y.as_mut_ptr()));
        }
        run(isa, &outs[..ws.len()], acts, streams);
    });
}

/// The products `(w, y)` as one pool call: the items of every matrix, one after the other.
fn run(isa: Isa, outs: &[(&PackedMatrix, SendPtr<f32>)], a: &Acts, streams: usize) {
    let m = a.m;
    let mc = if m <= MT_MAX { m } else { (CHUNK_BYTES / a.k).clamp(MT_MAX, 512) / MT_MAX * MT_MAX };
    let chunks = m.div_ceil(mc);
    // Decode on AVX-512: a work item's groups are taken in pairs (g, g + half) read in lockstep,
    // two weight streams per core (`decode_streams`).
    let two = m == 1 && streams >= 2 && isa == Isa::Avx512;
    // One chunk of activation rows (decode, small batches): shrinking items (`pool::shrinking_spans`).
    let mut spans = [(0u32, 0u32, 0u32); pool::SPANS_MAX];
    let mut groups = [0; MANY_MAX];
    groups.iter_mut().zip(outs).for_each(|(g, (w, _))| *g = w.groups());
    let nspans = if chunks == 1 { pool::shrinking_spans(&groups[..outs.len()], if two { 2 } else { 1 }, &mut spans) } else { 0 };
    let spans = &spans[..nspans];
    // Several chunks (prefill): per matrix, (groups per item, items per chunk, first item), a
    // few items per chunk so both cores stay busy even if one is interrupted.
    let want = pool::threads() * 2;
    let mut plan = [(0usize, 0usize, 0usize); MANY_MAX];
    let mut total = 0;
    for ((w, _), p) in outs.iter().zip(plan.iter_mut()) {
        let groups = w.groups();
        let per_item = groups.div_ceil(want.min(groups).max(1)).max(1);
        let items_per_chunk = groups.div_ceil(per_item);
        *p = (per_item, items_per_chunk, total);
        total += chunks * items_per_chunk;
    }
    let plan = &plan[..outs.len()];
    let items = if spans.is_empty() { total } else { spans.len() };
    pool::for_each(items, |item| {
        // This item's matrix, chunk and groups.
        let (wi, c, g_lo, g_hi) = if let Some(&(wi, lo, hi)) = spans.get(item) {
            (wi as usize, 0, lo as usize, hi as usize)
        } else {
            let wi = plan.partition_point(|p| p.2 <= item) - 1;
            let (per_item, items_per_chunk, first) = plan[wi];
            let (c, gi) = ((item - first) / items_per_chunk, (item - first) % items_per_chunk);
            (wi, c, gi * per_item, ((gi + 1) * per_item).min(outs[wi].0.groups()))
        };
        let (w, y) = (outs[wi].0, outs[wi].1);
        let n = w.n();
        let (r0, r1) = (c * mc, ((c + 1) * mc).min(m));
        // SAFETY (both writes): item (c, g) alone writes rows r0..r1, columns 16g..16g+cols.
        let put = |g: usize, r: usize, rows: &[[f32; ROWS]]| {
            let cols = (n - g * ROWS).min(ROWS);
            for (j, o) in rows.iter().enumerate() {
                unsafe { std::ptr::copy_nonoverlapping(o.as_ptr(), y.get().add((r + j) * n + g * ROWS), cols) };
            }
        };
        // Pairs (g, g + pairs) first; what is left (one group at most, or all without pairing) alone.
        let pairs = if two { (g_hi - g_lo) / 2 } else { 0 };
        for g in g_lo..g_lo + pairs {
            let mut out = [[0f32; ROWS]; 2];
            // SAFETY: `isa` was checked to be supported; row r0 exists.
            unsafe { tile_two(isa, w, g, g + pairs, a, r0, &mut out) };
            put(g, r0, &out[..1]);
            put(g + pairs, r0, &out[1..]);
        }
        for g in g_lo + 2 * pairs..g_hi {
            let mut r = r0;
            while r < r1 {
                let mt = (r1 - r).min(MT_MAX);
                let mut out = [[0f32; ROWS]; MT_MAX];
                // SAFETY: `isa` was checked to be supported; rows r..r+mt exist.
                unsafe { tile(isa, w, g, a, r, mt, &mut out) };
                put(g, r, &out[..mt]);
                r += mt;
            }
        }
    });
}

/// Two groups against one activation row in lockstep (AVX-512 only).
unsafe fn tile_two(isa: Isa, w: &PackedMatrix, g0: usize, g1: usize, a: &Acts, row: usize, out: &mut [[f32; ROWS]; 2]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => crate::avx512::tile_two(w, g0, g1, a, row, out),
        _ => unreachable!("no two-group kernel on the {} path", isa.name()),
    }
}

/// One micro-kernel call on the chosen path.
unsafe fn tile(isa: Isa, w: &PackedMatrix, g: usize, a: &Acts, row0: usize, mt: usize, out: &mut Out) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => crate::avx512::tile(w, g, a, row0, mt, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => crate::avx2::tile(w, g, a, row0, mt, out),
        _ => crate::scalar::tile(w, g, a, row0, mt, out),
    }
}
