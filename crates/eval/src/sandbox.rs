//! Runs a candidate Python function against its tests and reports which tests passed.
//!
//! The harness sanitizes the candidate (SANITIZE below), loads it, then runs each test separately
//! and prints one result line per test, tagged with a random per-run marker (so output the
//! candidate prints cannot pass for a result). A crash, timeout or `exit()` in the candidate simply
//! leaves the remaining tests failed.
//!
//! The Python process itself is started by `run_python` below, in the agent crate's sandbox (no
//! network, own namespaces and uid, limits), or where that cannot be set up (not root) in a plain
//! child with resource limits and a wall-clock kill.

use anyhow::{Context, Result};
use serde_json::json;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq)]
pub struct TestRun {
    pub passed: usize,
    pub total: usize,
    pub timed_out: bool,
    /// Why loading the candidate failed (syntax error, exception at import), if it did.
    pub load_error: Option<String>,
}

impl TestRun {
    pub fn share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.passed as f64 / self.total as f64
        }
    }
}

/// Runs `code`, then optional `setup` (e.g. a HumanEval `check` definition), then each test
/// statement, in one Python process limited to `timeout`.
pub fn run_tests(code: &str, setup: Option<&str>, tests: &[String], timeout: Duration) -> Result<TestRun> {
    let marker = format!("@@{:016x}", nonce());
    let harness = format!(
        r#"import ast as _ast, io as _io, json as _json, sys as _sys
_real = _sys.stdout
_sys.stdout = _io.StringIO()
_g = {{"__name__": "candidate"}}
_err = None
try:
    exec(compile(_sanitize(_json.loads({code})), "candidate.py", "exec"), _g)
    if {setup} is not None:
        exec(compile(_json.loads({setup}), "tests.py", "exec"), _g)
except BaseException as _e:
    _err = type(_e).__name__ + ": " + str(_e)[:200]
if _err is not None:
    _real.write("{marker} load " + _json.dumps(_err) + "\n")
else:
    for _i, _t in enumerate(_json.loads({tests})):
        try:
            exec(compile(_t, "test", "exec"), _g)
            _real.write("{marker} pass %d\n" % _i)
        except BaseException as _e:
            _real.write("{marker} fail %d\n" % _i)
        _real.flush()
"#,
        code = json!(json!(code).to_string()),
        setup = setup.map(|s| json!(json!(s).to_string()).to_string()).unwrap_or_else(|| "None".into()),
        tests = json!(json!(tests).to_string()),
    );
    let harness = SANITIZE.to_string() + &harness;
    let (stdout, timed_out) = run_python(&harness, timeout)?;
    let mut run = TestRun { passed: 0, total: tests.len(), timed_out, load_error: None };
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix(&marker) else { continue };
        let rest = rest.trim_start();
        if rest.starts_with("pass ") {
            run.passed += 1;
        } else if let Some(e) = rest.strip_prefix("load ") {
            run.load_error = Some(serde_json::from_str(e).unwrap_or_else(|_| e.to_string()));
        }
    }
    run.passed = run.passed.min(run.total);
    Ok(run)
}

/// Keeps what defines the solution (imports, functions, classes, constant assignments) and drops
/// top-level statements (example calls, prints, the model's own asserts, `__main__` blocks), as
/// evalplus' sanitizer does; a reply cut off by the token limit loses its unfinished tail.
pub const SANITIZE: &str = r#"def _sanitize(src):
    import ast
    lines = src.split("\n")
    tree = None
    for end in range(len(lines), 0, -1):
        try:
            tree = ast.parse("\n".join(lines[:end]))
            break
        except SyntaxError:
            continue
    if tree is None:
        return src
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    body = [n for n in tree.body if isinstance(n, keep)]
    return ast.unparse(ast.Module(body=body, type_ignores=[])) if body else src
"#;

fn nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    crate::rng::Rng::new(t ^ (std::process::id() as u64) << 32 ^ N.fetch_add(1, Ordering::Relaxed)).next_u64()
}

/// Run a test script: in the agent's sandbox (no network, own pid/mount namespaces, a fresh
/// unprivileged uid, rlimits, wall-clock kill) where this machine allows it; where it cannot
/// create namespaces (not root), in a plain rlimited child process, with one warning.
/// Returns (stdout, timed out).
pub fn run_python(script: &str, timeout: Duration) -> Result<(String, bool)> {
    static FALLBACK: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if FALLBACK.get().is_none() {
        let limits = nanbeige_agent::sandbox::Limits {
            wall: timeout,
            cpu_secs: timeout.as_secs().max(1),
            memory_bytes: 1 << 30,
            max_file_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            ..Default::default()
        };
        match nanbeige_agent::sandbox::run_python(script, &limits) {
            // The CPU limit equals the wall limit, so a busy loop can meet either first; both
            // mean the code ran too long.
            Ok(o) => return Ok((o.stdout, o.timed_out || o.signal == Some(libc::SIGXCPU))),
            Err(e) if e.to_string().contains("sandbox unavailable") => {
                FALLBACK.get_or_init(|| eprintln!("warning: {e}; code tests run in a plain rlimited process"));
            }
            Err(e) => return Err(e),
        }
    }
    run_python_plain(script, timeout)
}

/// Python in a child process with CPU/memory/file-size limits (set by a tiny preamble before the
/// script runs) and a wall-clock kill. Returns (stdout, timed out).
fn run_python_plain(script: &str, timeout: Duration) -> Result<(String, bool)> {
    let cpu = timeout.as_secs().max(1);
    let preamble = format!(
        "import resource as _r\nfor _k, _v in ((_r.RLIMIT_CPU, {cpu}), (_r.RLIMIT_AS, 1 << 30), (_r.RLIMIT_FSIZE, 1 << 20)):\n    _r.setrlimit(_k, (_v, _v))\ndel _r, _k, _v\n"
    );
    let python = std::env::var("NANBEIGE_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = std::env::temp_dir();
    let mut child = Command::new(&python)
        .args(["-I", "-B", "-c", &(preamble + script)])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {python} to run code tests"))?;
    let mut out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.by_ref().take(1 << 20).read_to_end(&mut buf);
        let _ = std::io::copy(&mut out, &mut std::io::sink());
        buf
    });
    let start = Instant::now();
    let timed_out;
    loop {
        if let Some(status) = child.try_wait()? {
            // Killed by the CPU limit (as long as the wall limit): the code ran too long too.
            timed_out = std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGXCPU);
            break;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let buf = reader.join().unwrap_or_default();
    Ok((String::from_utf8_lossy(&buf).into_owned(), timed_out))
}
