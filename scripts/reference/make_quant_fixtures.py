#!/usr/bin/env python3
"""GGML block-format fixtures: raw quantized bytes + gguf-py's dequantization.

Writes, under tests/fixtures/quant/:
  <TYPE>.json for TYPE in F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q8_0 Q4_K Q5_K Q6_K:
    {"type": "Q4_K", "ggml_type_id": 12, "block_size": 256, "type_size": 144,
     "shape": [rows, cols],        # row-major logical shape: `rows` rows of `cols` contiguous elements.
                                   # In a GGUF tensor info this is ne = [cols, rows] (ne0 = cols, the
                                   # fastest-varying dim; GGUF/ggml list dims innermost first).
     "source": "gguf.quants.quantize" | "random_blocks",
     "raw_hex": "...",              # the bytes exactly as stored in a GGUF tensor: rows*cols/block_size
                                    # blocks of type_size bytes, little-endian, rows concatenated.
     "dequantized": [rows*cols f32 values, row-major]}   # gguf.quants.dequantize(raw); every value is
                                    # written with the shortest decimal that round-trips to the same f32,
                                    # so parsing it as f32 gives the exact value (compare exactly).
  all-types.gguf  a GGUF v3 file (gguf-py GGUFWriter, arch "nanbeige-test", alignment 32) holding one
                  tensor per type, named by the type name ("Q4_K", ...), with the same bytes as the
                  JSON fixtures, plus a few metadata keys of each value type.
  all-types.json  what a GGUF reader must find in all-types.gguf: version, alignment, metadata
                  {key: {"type": gguf value type name, "value": ...}} and tensors
                  [{"name","ggml_type_id","ne","offset" (relative to the start of the data section),
                    "nbytes"}]; tensor values: see <TYPE>.json.

F32/F16/BF16/Q4_0/Q4_1/Q5_0/Q8_0 are made with gguf.quants.quantize from f32 data (3 rows: N(0,1);
N(0,0.02) "weight-like"; N(0,1) with outliers of +-20 and one all-zero 32-block). gguf-py cannot
quantize Q4_K/Q5_K/Q6_K, so those are random valid blocks: random bytes for the packed 6-bit scales /
nibbles / high bits, f16 super-block scales d (and dmin) drawn in a sane range. Each dequantization is
also cross-checked (bit-exact) against an independent scalar port of ggml's dequantize_row_* written
below, which doubles as a description of the layouts. Seed: numpy default_rng(20240601 + type id).
"""
import json
import os
import struct
import time

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "quant")
ROWS, COLS = 3, 512
TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K"]
QUANTIZABLE = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q8_0"}


def f16(b, off):
    return np.float32(np.frombuffer(b, dtype="<f2", count=1, offset=off)[0])


# ---- independent scalar reference (port of ggml-quants.c dequantize_row_*), f32 arithmetic ----
def deq_block(t, b):
    y = np.zeros(GGML_QUANT_SIZES[T[t]][0], dtype=np.float32)
    if t == "Q4_0":  # d:f16, qs[16]; y[j] = (lo-8)*d, y[j+16] = (hi-8)*d
        d = f16(b, 0)
        for j in range(16):
            q = b[2 + j]
            y[j] = np.float32((q & 0xF) - 8) * d
            y[j + 16] = np.float32((q >> 4) - 8) * d
    elif t == "Q4_1":  # d:f16, m:f16, qs[16]; y = q*d + m
        d, m = f16(b, 0), f16(b, 2)
        for j in range(16):
            q = b[4 + j]
            y[j] = np.float32(q & 0xF) * d + m
            y[j + 16] = np.float32(q >> 4) * d + m
    elif t == "Q5_0":  # d:f16, qh:u32 LE (bit j = 5th bit of element j), qs[16]; y = (q-16)*d
        d = f16(b, 0)
        qh = struct.unpack_from("<I", b, 2)[0]
        for j in range(16):
            q = b[6 + j]
            x0 = ((q & 0xF) | (((qh >> j) << 4) & 0x10)) - 16
            x1 = ((q >> 4) | ((qh >> (j + 12)) & 0x10)) - 16
            y[j] = np.float32(x0) * d
            y[j + 16] = np.float32(x1) * d
    elif t == "Q8_0":  # d:f16, qs:i8[32]
        d = f16(b, 0)
        qs = np.frombuffer(b, dtype=np.int8, count=32, offset=2)
        for j in range(32):
            y[j] = np.float32(qs[j]) * d
    elif t in ("Q4_K", "Q5_K"):
        # d:f16, dmin:f16, scales[12] (8 x (6-bit scale, 6-bit min)), [Q5_K: qh[32]], qs[128]
        d, dmin = f16(b, 0), f16(b, 2)
        sc = b[4:16]

        def scale_min(j):
            if j < 4:
                return sc[j] & 63, sc[j + 4] & 63
            return (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)

        qh = b[16:48] if t == "Q5_K" else None
        qs = b[48:176] if t == "Q5_K" else b[16:144]
        u1, u2 = 1, 2
        for blk in range(4):  # 4 x 64 elements; each = two 32-element sub-blocks (low, high nibbles)
            s1, m1 = scale_min(2 * blk)
            s2, m2 = scale_min(2 * blk + 1)
            d1, mm1 = d * np.float32(s1), dmin * np.float32(m1)
            d2, mm2 = d * np.float32(s2), dmin * np.float32(m2)
            for l in range(32):
                q = qs[32 * blk + l]
                lo, hi = q & 0xF, q >> 4
                if qh is not None:
                    lo += 16 if qh[l] & u1 else 0
                    hi += 16 if qh[l] & u2 else 0
                y[64 * blk + l] = d1 * np.float32(lo) - mm1
                y[64 * blk + 32 + l] = d2 * np.float32(hi) - mm2
            u1, u2 = u1 << 2, u2 << 2
    elif t == "Q6_K":  # ql[128], qh[64], scales:i8[16], d:f16
        ql, qh = b[0:128], b[128:192]
        scl = np.frombuffer(b, dtype=np.int8, count=16, offset=192)
        d = f16(b, 208)
        for n in range(2):  # two halves of 128
            L, H, S = ql[64 * n:], qh[32 * n:], scl[8 * n:]
            for l in range(32):
                i = l // 16
                q1 = ((L[l] & 0xF) | (((H[l] >> 0) & 3) << 4)) - 32
                q2 = ((L[l + 32] & 0xF) | (((H[l] >> 2) & 3) << 4)) - 32
                q3 = ((L[l] >> 4) | (((H[l] >> 4) & 3) << 4)) - 32
                q4 = ((L[l + 32] >> 4) | (((H[l] >> 6) & 3) << 4)) - 32
                base = 128 * n
                y[base + l] = d * np.float32(S[i]) * np.float32(q1)
                y[base + l + 32] = d * np.float32(S[i + 2]) * np.float32(q2)
                y[base + l + 64] = d * np.float32(S[i + 4]) * np.float32(q3)
                y[base + l + 96] = d * np.float32(S[i + 6]) * np.float32(q4)
    else:
        raise ValueError(t)
    return y


def scalar_dequant(t, raw):
    if t == "F32":
        return np.frombuffer(raw, dtype="<f4").copy()
    if t == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    if t == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    bs, ts = GGML_QUANT_SIZES[T[t]]
    return np.concatenate([deq_block(t, raw[i:i + ts]) for i in range(0, len(raw), ts)])


# ---- data ----
def source_data(rng):
    x = np.stack([rng.normal(0, 1, COLS), rng.normal(0, 0.02, COLS), rng.normal(0, 1, COLS)]).astype(np.float32)
    x[2, rng.choice(COLS, 6, replace=False)] = np.float32(20.0) * rng.choice([-1, 1], 6)
    x[2, 64:96] = 0.0
    return x


def random_kblocks(t, rng, n_blocks):
    bs, ts = GGML_QUANT_SIZES[T[t]]
    blocks = rng.integers(0, 256, (n_blocks, ts), dtype=np.uint8)
    if t in ("Q4_K", "Q5_K"):
        # d and dmin f16: with 6-bit scales (<=63) and 4/5-bit quants, values stay O(1)
        d = rng.uniform(2e-4, 2e-3, n_blocks).astype(np.float16)
        dmin = rng.uniform(2e-4, 2e-3, n_blocks).astype(np.float16)
        blocks[:, 0:2] = d.view(np.uint8).reshape(n_blocks, 2)
        blocks[:, 2:4] = dmin.view(np.uint8).reshape(n_blocks, 2)
    elif t == "Q6_K":
        d = rng.uniform(5e-5, 4e-4, n_blocks).astype(np.float16)  # int8 scales x 6-bit signed quants
        blocks[:, 208:210] = d.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def short_f32(v):
    # shortest decimal that round-trips to this f32, as a Python float (json prints it back identically)
    return float(np.format_float_positional(np.float32(v), unique=True, trim="-"))


def main():
    t0 = time.time()
    os.makedirs(OUT, exist_ok=True)
    raws = {}
    for t in TYPES:
        qt = T[t]
        rng = np.random.default_rng(20240601 + int(qt))
        bs, ts = GGML_QUANT_SIZES[qt]
        if t in QUANTIZABLE:
            q = gguf.quants.quantize(source_data(rng), qt)
            raw = np.ascontiguousarray(q).view(np.uint8).reshape(ROWS, -1)
            source = "gguf.quants.quantize"
        else:
            raw = random_kblocks(t, rng, ROWS * COLS // bs).reshape(ROWS, -1)
            source = "random_blocks"
        assert raw.shape == (ROWS, COLS // bs * ts), (t, raw.shape)
        raw_bytes = raw.tobytes()
        deq = gguf.quants.dequantize(raw.view(np.float32) if t == "F32" else
                                     raw.view(np.float16) if t == "F16" else raw, qt)
        deq = np.asarray(deq, dtype=np.float32).reshape(ROWS, COLS)
        assert np.isfinite(deq).all()
        ref = scalar_dequant(t, raw_bytes).reshape(ROWS, COLS)
        assert np.array_equal(ref.view(np.uint32), deq.view(np.uint32)), f"{t}: scalar port disagrees"
        vals = [short_f32(v) for v in deq.reshape(-1)]
        assert np.array_equal(np.array(vals, dtype=np.float32), deq.reshape(-1))
        with open(os.path.join(OUT, t + ".json"), "w") as f:
            json.dump({"type": t, "ggml_type_id": int(qt), "block_size": bs, "type_size": ts,
                       "shape": [ROWS, COLS], "source": source, "raw_hex": raw_bytes.hex(),
                       "dequantized": vals}, f, separators=(",", ":"))
        raws[t] = raw
        print(f"{t:5} id={int(qt):2} bytes={len(raw_bytes):5} absmax={np.abs(deq).max():.4g} "
              f"std={deq.std():.4g} ({source})")

    # ---- all-types.gguf ----
    path = os.path.join(OUT, "all-types.gguf")
    w = gguf.GGUFWriter(path, arch="nanbeige-test")
    w.add_name("nanbeige quant fixture")
    w.add_uint32("test.u32", 4294967295)
    w.add_int32("test.i32", -123456)
    w.add_float32("test.f32", 0.125)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo ✓ 世界")
    w.add_uint64("test.u64", 2 ** 40 + 7)
    w.add_array("test.arr_str", ["a", "", "<|im_start|>"])
    w.add_array("test.arr_i32", [1, -2, 3])
    for t in TYPES:
        raw = raws[t]
        if t == "F32":
            w.add_tensor(t, raw.view(np.float32))
        elif t == "F16":
            w.add_tensor(t, raw.view(np.float16))
        else:
            w.add_tensor(t, raw, raw_shape=raw.shape, raw_dtype=T[t])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # read back with GGUFReader and record what a reader must see
    r = gguf.GGUFReader(path)
    meta = {}
    for k, fld in r.fields.items():
        if k.startswith("GGUF."):
            continue
        vt = fld.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            sub = fld.types[1]
            val = [fld.parts[i].tobytes().decode() if sub == gguf.GGUFValueType.STRING else fld.parts[i].tolist()[0]
                   for i in fld.data]
            meta[k] = {"type": "ARRAY", "elem_type": sub.name, "value": val}
        elif vt == gguf.GGUFValueType.STRING:
            meta[k] = {"type": "STRING", "value": fld.parts[fld.data[0]].tobytes().decode()}
        else:
            meta[k] = {"type": vt.name, "value": fld.parts[fld.data[0]].tolist()[0]}
    tensors = []
    for ti in r.tensors:
        got = np.asarray(ti.data).view(np.uint8).tobytes()
        assert got == raws[ti.name].tobytes(), ti.name
        assert list(ti.shape) == [COLS, ROWS], (ti.name, ti.shape)
        tensors.append({"name": ti.name, "ggml_type_id": int(ti.tensor_type), "ne": [int(x) for x in ti.shape],
                        "offset": int(ti.data_offset - r.data_offset), "nbytes": int(ti.n_bytes)})
    info = {"file": "all-types.gguf", "version": int(r.fields["GGUF.version"].parts[-1][0]),
            "alignment": r.alignment, "tensor_count": len(tensors), "metadata": meta, "tensors": tensors,
            "note": "tensor ne is GGUF order (ne0 = cols); values = <name>.json dequantized"}
    with open(os.path.join(OUT, "all-types.json"), "w") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for fn in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, fn)):>8}  quant/{fn}")
    print(f"{time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
