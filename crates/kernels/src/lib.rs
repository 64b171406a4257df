//! nanbeige-kernels: CPU matrix kernels for the weights LLM inference actually uses.
//!
//! - GGUF quantized weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), repacked once at load
//!   time into a 16-row interleaved layout (layout.rs), times f32 activations that are quantized
//!   once per call exactly as ggml quantizes them (acts.rs), with ggml's integer dot-product
//!   semantics: `matmul`.
//! - bf16 / f16 weights used in place, converted in registers: `matmul_float`.
//!
//! Each has an AVX-512 VNNI path, an AVX2 path and a scalar path, picked at run time
//! (dispatch.rs); the `_isa` variants force one (tests cover every path the machine can run).
//! m = 1 is a GEMV (decode), m > 1 a blocked GEMM (prefill); both spread over a persistent pool
//! whose caller works too (pool.rs).
//! Not here: candle tensors (the model crate wraps these slices), f32 weights, attention.

pub mod acts;
pub mod buffer;
pub mod dispatch;
pub mod float;
pub mod gemm;
pub mod layout;
pub mod pool;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

pub use dispatch::{active_isa, decode_streams, prefetch_distance, supported_isas, Isa};
pub use float::FloatWeights;
pub use layout::{Format, PackedMatrix};

/// y (m x n) = x (m x k) . W^T for packed quantized W (n x k), on the active path.
pub fn matmul(w: &PackedMatrix, x: &[f32], m: usize, y: &mut [f32]) {
    gemm::matmul(active_isa(), w, x, m, y)
}

/// `matmul` on a chosen path (panics if this CPU cannot run it).
pub fn matmul_isa(isa: Isa, w: &PackedMatrix, x: &[f32], m: usize, y: &mut [f32]) {
    gemm::matmul(isa, w, x, m, y)
}

/// `matmul` of the same x by several packed matrices of one format and row length, quantizing x
/// once and sharing one pool call (q/k/v, gate/up). Same results as one `matmul` per matrix.
pub fn matmul_many(ws: &[&PackedMatrix], x: &[f32], m: usize, ys: &mut [&mut [f32]]) {
    gemm::matmul_many(active_isa(), ws, x, m, ys)
}

/// `matmul_many` on a chosen path (panics if this CPU cannot run it).
pub fn matmul_many_isa(isa: Isa, ws: &[&PackedMatrix], x: &[f32], m: usize, ys: &mut [&mut [f32]]) {
    gemm::matmul_many(isa, ws, x, m, ys)
}

/// `matmul_many_isa` with the decode weight streams per core set (1 or 2; see
/// `dispatch::decode_streams`).
pub fn matmul_streams_isa(isa: Isa, streams: usize, ws: &[&PackedMatrix], x: &[f32], m: usize, ys: &mut [&mut [f32]]) {
    gemm::matmul_many_streams(isa, streams, ws, x, m, ys)
}

/// y (m x n) = x (m x k) . W^T for half-precision W (n x k), on the active path.
pub fn matmul_float(w: FloatWeights, n: usize, k: usize, x: &[f32], m: usize, y: &mut [f32]) {
    float::matmul_float(active_isa(), w, n, k, x, m, y)
}

/// `matmul_float` on a chosen path (panics if this CPU cannot run it).
pub fn matmul_float_isa(isa: Isa, w: FloatWeights, n: usize, k: usize, x: &[f32], m: usize, y: &mut [f32]) {
    float::matmul_float(isa, w, n, k, x, m, y)
}
