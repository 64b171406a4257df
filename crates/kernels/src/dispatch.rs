//! Which instruction-set path the kernels take. Detected once at run time with
//! `is_x86_feature_detected!`; `NANBEIGE_KERNEL=scalar|avx2|avx512` overrides it for the whole
//! process, and every kernel entry point also has an `_isa` variant so tests can run each path the
//! machine supports side by side.
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
