//! What a benchmark needs to know about the machine: CPU model and the SIMD features it offers,
//! memory read bandwidth (measured in-process), and this process's peak resident memory.
//! Linux-first: where /proc is missing the answers are `None`, never an error.

use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct CpuInfo {
    pub model: Option<String>,
    pub logical_cpus: usize,
    /// Instruction-set extensions detected at run time (x86: is_x86_feature_detected!).
    pub features: Vec<&'static str>,
    /// The instruction-set path the matrix kernels run (nanbeige-kernels' run-time choice).
    pub kernel_path: &'static str,
    /// How far ahead (bytes) the matrix kernels prefetch their weights; 0 when they do not.
    pub prefetch_bytes: usize,
    /// Weight streams each core reads at once in decode matmuls (1 or 2).
    pub decode_streams: usize,
    /// AMX is never used: on these machines AMX instructions fault although the CPU flags list it.
    pub amx_used: bool,
}

pub fn cpu_info() -> CpuInfo {
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    CpuInfo {
        model,
        logical_cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        features: simd_features(),
        kernel_path: nanbeige_kernels::active_isa().name(),
        prefetch_bytes: nanbeige_kernels::prefetch_distance(),
        decode_streams: nanbeige_kernels::decode_streams(),
        amx_used: false,
    }
}

#[cfg(target_arch = "x86_64")]
fn simd_features() -> Vec<&'static str> {
    let mut f = vec![];
    macro_rules! probe {
        ($($name:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($name) {
                f.push($name);
            }
        )*};
    }
    probe!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "bmi2",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512bf16",
        "avx512vbmi"
    );
    f
}

#[cfg(target_arch = "aarch64")]
fn simd_features() -> Vec<&'static str> {
    let mut f = vec!["neon"];
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        f.push("dotprod");
    }
    f
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd_features() -> Vec<&'static str> {
    vec![]
}

/// Peak resident set size of this process so far (VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// Current resident set size (VmRSS), in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Memory read bandwidth in bytes/s for each entry of `thread_counts`: that many threads each sum
/// their share of a `bytes`-sized buffer (far larger than any cache); best of `runs`. This is what
/// decoding one sequence does with the weights, so bandwidth / (weight bytes per token) is the
/// decode ceiling.
pub fn read_bandwidth(bytes: usize, thread_counts: &[usize], runs: usize) -> Vec<f64> {
    let words = (bytes / 8).max(1 << 16);
    // The same kind of memory the packed weights live in (2 MiB pages where the kernel allows, see
    // kernels' buffer.rs), so the ceiling compares like with like. Written once so every page is
    // really backed by memory (an untouched buffer reads the zero page).
    let mut mem = nanbeige_kernels::buffer::Buffer::zeroed(words * 8);
    for (i, w) in mem.as_mut_slice().chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(i as u64).to_le_bytes());
    }
    // SAFETY: the buffer is 64-byte aligned and `words * 8` bytes long.
    let buf: &[u64] = unsafe { std::slice::from_raw_parts(mem.as_slice().as_ptr() as *const u64, words) };
    let mut sink = 0u64;
    let mut out = vec![];
    for &threads in thread_counts {
        let part = words.div_ceil(threads.max(1));
        let mut best = 0f64;
        for _ in 0..runs.max(1) {
            let t0 = Instant::now();
            let total: u64 = std::thread::scope(|s| {
                let handles: Vec<_> = buf.chunks(part).map(|c| s.spawn(move || sum_words(c))).collect();
                handles.into_iter().map(|h| h.join().unwrap_or(0)).fold(0, u64::wrapping_add)
            });
            let secs = t0.elapsed().as_secs_f64();
            sink = sink.wrapping_add(total);
            best = best.max((words * 8) as f64 / secs);
        }
        out.push(best);
    }
    // Keep the sums observable so the reads are not optimised away.
    std::hint::black_box(sink);
    out
}

/// Eight independent accumulators so the loop is limited by loads, not by one add chain.
fn sum_words(c: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = c.chunks_exact(8);
    for w in &mut chunks {
        for i in 0..8 {
            acc[i] = acc[i].wrapping_add(w[i]);
        }
    }
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &x| a.wrapping_add(x));
    acc.iter().fold(tail, |a, &x| a.wrapping_add(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_is_positive_and_rss_is_read() {
        assert!(read_bandwidth(8 << 20, &[1, 2], 2).iter().all(|&b| b > 1e8));
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(peak_rss_bytes().unwrap() >= rss_bytes().unwrap() / 2);
        }
        assert!(sum_words(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == 55);
    }
}
