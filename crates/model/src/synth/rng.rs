//! Fast, deterministic random weight values for synthetic models.
//!
//! Values are approximately normal (the sum of four 16-bit uniforms, rescaled: bounded at ±3.46σ,
//! otherwise indistinguishable from a Gaussian for speed measurements) and rounded to bf16, so every
//! output format (bf16 safetensors, f32 or quantized GGUF) starts from the same numbers, as a real
//! bf16 checkpoint does. A tensor's values depend only on the seed and the tensor's name, never on
//! the thread count: the buffer is cut into fixed chunks, each with its own generator.
//! Not cryptographic, not for sampling.

use half::bf16;

/// Values per independently seeded chunk (the unit of parallel work).
const CHUNK: usize = 1 << 16;

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Seed of one tensor: the model seed mixed with an FNV-1a hash of the tensor's (HF) name.
pub fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    splitmix64(seed ^ splitmix64(h))
}

/// wyrand: one multiply per 64 random bits.
struct WyRand(u64);

impl WyRand {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }
}

/// Fill `out` with bf16-rounded values `mean + std * z`, z approximately standard normal.
pub fn fill_normal(out: &mut [f32], seed: u64, mean: f32, std: f32) {
    // Sum of four uniforms on [0, 65535]: mean 131070, standard deviation 65536 / sqrt(3).
    let scale = std / (65536.0 / 3f32.sqrt());
    let fill_chunk = |index: usize, chunk: &mut [f32]| {
        let mut rng = WyRand(splitmix64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        for v in chunk.iter_mut() {
            let r = rng.next();
            let sum = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
            let x = mean + (sum as f32 - 131070.0) * scale;
            *v = bf16::from_f32(x).to_f32();
        }
    };
    // Contiguous runs of whole chunks, one per thread; a chunk's generator depends only on its
    // global index, so the split does not change the values.
    let n_chunks = out.len().div_ceil(CHUNK);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, n_chunks.max(1));
    let per_thread = n_chunks.div_ceil(threads) * CHUNK;
    std::thread::scope(|s| {
        for (t, run) in out.chunks_mut(per_thread.max(1)).enumerate() {
            s.spawn(move || {
                for (j, c) in run.chunks_mut(CHUNK).enumerate() {
                    fill_chunk(t * per_thread / CHUNK + j, c);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_roughly_normal() {
        let mut a = vec![0f32; 300_000];
        let mut b = vec![0f32; 300_000];
        fill_normal(&mut a, 7, 0.0, 0.02);
        fill_normal(&mut b, 7, 0.0, 0.02);
        assert_eq!(a, b);
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-3, "{mean}");
        assert!((var.sqrt() - 0.02).abs() < 1e-3, "{}", var.sqrt());
        assert!(a.iter().all(|&x| bf16::from_f32(x).to_f32() == x));
        let mut c = vec![0f32; 1000];
        fill_normal(&mut c, 8, 0.0, 0.02);
        assert_ne!(&a[..1000], &c[..]);
        assert_ne!(tensor_seed(1, "a"), tensor_seed(1, "b"));
    }
}
