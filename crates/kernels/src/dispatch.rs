//! Which instruction-set path the kernels take. Detected once at run time with
//! `is_x86_feature_detected!`; `NANBEIGE_KERNEL=scalar|avx2|avx512` overrides it for the whole
//! process, and every kernel entry point also has an `_isa` variant so tests can run each path the
//! machine supports side by side.
//! It also decides how far ahead the kernels prefetch their weights (`prefetch_distance`).
//! Never AMX: its tile instructions fault on machines whose CPUID lists them but whose OS has not
//! enabled the tile state, so nothing here asks for it.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust; the reference the SIMD paths must agree with.
    Scalar,
    /// AVX2 + FMA + F16C: int8 products with `vpmaddubsw`.
    Avx2,
    /// AVX-512 F/BW/VL + VNNI: int8 products with `vpdpbusd`.
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    pub fn parse(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx512vnni" => Some(Isa::Avx512),
            _ => None,
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Every path this machine can run, slowest first.
pub fn supported_isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| i.is_supported()).collect()
}

/// The path used by the plain entry points: `NANBEIGE_KERNEL` if set (and runnable here), else the
/// best supported one. Decided once per process.
pub fn active_isa() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = *supported_isas().last().unwrap();
        match std::env::var("NANBEIGE_KERNEL") {
            Ok(v) if !v.is_empty() => match Isa::parse(&v) {
                Some(i) if i.is_supported() => i,
                Some(i) => {
                    eprintln!("warning: NANBEIGE_KERNEL={v}: this CPU cannot run the {} path; using {}", i.name(), best.name());
                    best
                }
                None => {
                    eprintln!("warning: NANBEIGE_KERNEL={v} is not one of scalar, avx2, avx512; using {}", best.name());
                    best
                }
            },
            _ => best,
        }
    })
}

/// How many bytes ahead of the data being multiplied each core's kernels (quantized and bf16/f16)
/// ask for their weights (software prefetch into L2), or 0 for none; a decode kernel reading two
/// weight streams gives each half of it. On Intel cores the hardware prefetchers leave one core
/// streaming a Q4_0 GEMV from memory at ~10.5 GB/s where asking ahead reaches ~14.5 (Xeon with
/// AVX-512, 2 MiB pages, `kernel_bench`; docs/PERFORMANCE.md); 4 KiB beat 8 KiB once decode read
/// two streams (Q4_K matmuls +7-12%, whole decode Q4_K_M +9%, Q4_0 +3%, bf16 +3%). On AMD it is
/// off: a nearer prefetch (two blocks ahead, into L1) lost speed on Zen 4 and none was kept on
/// Zen 3; this one is untested there. `NANBEIGE_PREFETCH=BYTES` overrides (0 turns it off).
pub fn prefetch_distance() -> usize {
    static DIST: OnceLock<usize> = OnceLock::new();
    *DIST.get_or_init(|| {
        let v = std::env::var("NANBEIGE_PREFETCH").ok();
        prefetch_setting(v.as_deref(), cpu_vendor() == *b"GenuineIntel").unwrap_or_else(|| {
            eprintln!("warning: NANBEIGE_PREFETCH={} is not a byte count; prefetching off", v.unwrap_or_default());
            0
        })
    })
}

/// Weight streams each core reads at once in decode (m = 1) matmuls: 2 takes a work item's
/// 16-row groups in pairs read in lockstep (AVX-512 path), 1 one group after another. Two
/// streams keep more of memory's bandwidth busy on the Intel Xeon measured (matmuls of a Q4_0
/// decode step +4-10%, Q4_K +2%, Q8_0 +3-8%: `kernel_bench --decode-sim`, docs/PERFORMANCE.md);
/// AMD cores are untested, so they keep one. `NANBEIGE_STREAMS=1|2` overrides the default.
pub fn decode_streams() -> usize {
    static STREAMS: OnceLock<usize> = OnceLock::new();
    *STREAMS.get_or_init(|| {
        let v = std::env::var("NANBEIGE_STREAMS").ok();
        streams_setting(v.as_deref(), cpu_vendor() == *b"GenuineIntel").unwrap_or_else(|| {
            eprintln!("warning: NANBEIGE_STREAMS={} is not 1 or 2; using 1", v.unwrap_or_default());
            1
        })
    })
}

/// The streams for a `NANBEIGE_STREAMS` value (unset or blank: the CPU's default), or None when
/// the value is not 1 or 2.
fn streams_setting(env: Option<&str>, intel: bool) -> Option<usize> {
    match env.map(str::trim) {
        Some(v) if !v.is_empty() => v.parse().ok().filter(|s| (1..=2).contains(s)),
        _ => Some(if intel { 2 } else { 1 }),
    }
}

/// The distance for a `NANBEIGE_PREFETCH` value (unset or blank: the CPU's default), or None when
/// the value is not a byte count.
fn prefetch_setting(env: Option<&str>, intel: bool) -> Option<usize> {
    match env.map(str::trim) {
        Some(v) if !v.is_empty() => v.parse().ok(),
        _ => Some(if intel { 4 << 10 } else { 0 }),
    }
}

/// The CPUID vendor string ("GenuineIntel", "AuthenticAMD", ...).
#[cfg(target_arch = "x86_64")]
fn cpu_vendor() -> [u8; 12] {
    // SAFETY: CPUID leaf 0 exists on every x86-64 CPU.
    #[allow(unused_unsafe)]
    let r = unsafe { core::arch::x86_64::__cpuid(0) };
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..].copy_from_slice(&r.ecx.to_le_bytes());
    v
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_vendor() -> [u8; 12] {
    [0; 12]
}

/// Asks for the `bytes` bytes from `p` on (one request per 64-byte line) to be brought into L2.
/// `p` may point past the end of the weights: a prefetch never faults, and the address is only
/// formed with wrapping arithmetic.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const u8, bytes: usize) {
    use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    let mut o = 0;
    while o < bytes {
        // SAFETY: a prefetch is a hint; it reads nothing the program sees and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(o) as *const i8) };
        o += 64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_setting_defaults_by_vendor_and_obeys_the_variable() {
        assert_eq!(prefetch_setting(None, true), Some(4096));
        assert_eq!(prefetch_setting(None, false), Some(0));
        assert_eq!(prefetch_setting(Some("  "), true), Some(4096));
        assert_eq!(prefetch_setting(Some("0"), true), Some(0));
        assert_eq!(prefetch_setting(Some("16384"), false), Some(16384));
        assert_eq!(prefetch_setting(Some("8k"), true), None);
    }

    #[test]
    fn streams_setting_defaults_by_vendor_and_obeys_the_variable() {
        assert_eq!(streams_setting(None, true), Some(2));
        assert_eq!(streams_setting(None, false), Some(1));
        assert_eq!(streams_setting(Some(" 1 "), true), Some(1));
        assert_eq!(streams_setting(Some("2"), false), Some(2));
        assert_eq!(streams_setting(Some("3"), true), None);
        assert_eq!(streams_setting(Some("two"), true), None);
    }
}
