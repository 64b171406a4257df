//! GGUF v3 reading: every tensor type we support (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K,
//! Q5_K, Q6_K) dequantizes exactly as gguf-py's reference does, metadata of each value type reads
//! back, and broken files fail with a clear error instead of a panic.
//! Fixtures: scripts/reference/make_quant_fixtures.py.

use candle_core::quantized::gguf_file::Value as GV;
use candle_core::Device;
use nanbeige_model::open_gguf;
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant")
}

const TYPES: [&str; 10] = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K"];

#[test]
fn every_tensor_type_dequantizes_like_the_reference() {
    let (mut file, content) = open_gguf(&dir().join("all-types.gguf")).unwrap();
    for ty in TYPES {
        let want: Value = serde_json::from_str(&std::fs::read_to_string(dir().join(format!("{ty}.json"))).unwrap()).unwrap();
        let q = content.tensor(&mut file, ty, &Device::Cpu).unwrap();
        assert_eq!(format!("{:?}", q.dtype()).replace('_', ""), ty.replace('_', ""), "type of {ty}");
        assert_eq!(q.shape().dims(), &[3, 512], "{ty} shape (rows, cols)");
        let got = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<f32> = want["dequantized"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // The reference values are exact f32s; allow one rounding step of the scale product.
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{ty}[{i}]: {g} vs {w}");
        }
    }
}

#[test]
fn metadata_values_read_back() {
    let (_, content) = open_gguf(&dir().join("all-types.gguf")).unwrap();
    let md = &content.metadata;
    assert_eq!(md["test.u32"].to_u32().unwrap(), u32::MAX);
    assert_eq!(md["test.i32"].to_i32().unwrap(), -123456);
    assert_eq!(md["test.f32"].to_f32().unwrap(), 0.125);
    assert!(md["test.bool"].to_bool().unwrap());
    assert_eq!(md["test.string"].to_string().unwrap(), "h\u{e9}llo \u{2713} \u{4e16}\u{754c}");
    assert_eq!(md["test.u64"].to_u64().unwrap(), 1099511627783);
    let arr: Vec<&str> = md["test.arr_str"].to_vec().unwrap().iter().map(|v| v.to_string().unwrap().as_str()).collect();
    assert_eq!(arr, ["a", "", "<|im_start|>"]);
    let ints: Vec<i32> = md["test.arr_i32"].to_vec().unwrap().iter().map(|v| match v { GV::I32(x) => *x, _ => panic!() }).collect();
    assert_eq!(ints, [1, -2, 3]);
}

fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("nanbeige-test-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn err_of(path: &PathBuf) -> String {
    match open_gguf(path) {
        Ok(_) => panic!("{} opened although it is broken", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn truncated_file_is_a_clear_error() {
    let bytes = std::fs::read(dir().join("all-types.gguf")).unwrap();
    // Cut inside the tensor data, and inside the header.
    let e = err_of(&tmp("trunc-data.gguf", &bytes[..bytes.len() - 100]));
    assert!(e.contains("truncated"), "{e}");
    let e = err_of(&tmp("trunc-header.gguf", &bytes[..200]));
    assert!(e.contains("not a valid GGUF file"), "{e}");
}

#[test]
fn corrupt_magic_and_empty_file_are_clear_errors() {
    let mut bytes = std::fs::read(dir().join("all-types.gguf")).unwrap();
    bytes[0] = b'X';
    assert!(err_of(&tmp("magic.gguf", &bytes)).contains("not a valid GGUF file"));
    assert!(err_of(&tmp("empty.gguf", &[])).contains("not a valid GGUF file"));
    let e = format!("{:#}", open_gguf(&dir().join("does-not-exist.gguf")).unwrap_err());
    assert!(e.contains("opening") && e.contains("does-not-exist.gguf"), "{e}");
}

#[test]
fn unknown_tensor_type_is_a_clear_error() {
    let mut bytes = std::fs::read(dir().join("all-types.gguf")).unwrap();
    // The tensor-info entry of "Q4_K": name, n_dims u32, 2 x u64 dims, then its type id (12) as u32.
    let name = b"\x04\x00\x00\x00\x00\x00\x00\x00Q4_K";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4 + 16;
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 12);
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = err_of(&tmp("badtype.gguf", &bytes));
    assert!(e.contains("unknown dtype"), "{e}");
}
