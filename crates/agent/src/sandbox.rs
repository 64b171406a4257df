//! `run_python`: runs untrusted Python (the agent's `python` tool, unit tests of generated code) in
//! a separate process that cannot reach the network, cannot write outside its own temp dir, and is
//! held to CPU-time, memory, process-count, file-size, output and wall-clock limits.
//!
//! How (Linux, needs root or CAP_SYS_ADMIN; otherwise it fails with a clear error, never runs
//! unconfined):
//! - the spawned child unshares new network, mount and PID namespaces and forks an init (pid 1 of
//!   the new PID namespace), which forks Python and waits for it. When that init exits (Python done,
//!   or killed by the wall clock) the kernel kills every process left in the namespace, so nothing
//!   a fork bomb spawned survives;
//! - the new network namespace has only a down loopback: no route anywhere;
//! - in the mount namespace the sandbox's temp dir is bind-mounted on /tmp (its cwd and HOME), the
//!   other world-writable places (/var/tmp, /dev/shm, /run/lock) are covered by read-only tmpfs, and
//!   Python runs under a fresh unprivileged uid, so it can write nowhere else;
//! - rlimits: CPU seconds, address space, file size, processes (per uid, and the uid is fresh, so
//!   the count is this sandbox's alone), no core dumps; where the cgroup-v1 `memory` and `pids`
//!   hierarchies are writable the whole tree is also capped there (a fork bomb times the per-process
//!   address-space limit is then still bounded);
//! - stdout and stderr are read concurrently and kept up to `max_output_bytes` each.
//!
//! Not here: seccomp filtering, a read-only view of the rest of the filesystem beyond what file
//! permissions give an unprivileged uid.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Limits {
    /// Wall-clock limit for the whole run.
    pub wall: Duration,
    /// CPU seconds per process (RLIMIT_CPU).
    pub cpu_secs: u64,
    /// Address space per process (RLIMIT_AS) and, where a memory cgroup is available, for the tree.
    pub memory_bytes: u64,
    /// Processes/threads the sandbox may have at once.
    pub max_processes: u64,
    /// Largest file it may write (RLIMIT_FSIZE).
    pub max_file_bytes: u64,
    /// Bytes kept of stdout and of stderr each; the rest is counted and dropped.
    pub max_output_bytes: usize,
    /// The interpreter; default: $NANBEIGE_PYTHON, /usr/bin/python3, /usr/local/bin/python3.
    pub python: Option<PathBuf>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall: Duration::from_secs(20),
            cpu_secs: 10,
            memory_bytes: 1 << 30,
            max_processes: 32,
            max_file_bytes: 16 << 20,
            max_output_bytes: 16 << 10,
            python: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// The exit status when Python exited by itself; None when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Which limit ended the run, when one did (wall-clock, cpu time, memory, file size).
    pub killed_reason: Option<String>,
    pub wall_ms: f64,
    pub stdout_truncated_bytes: usize,
    pub stderr_truncated_bytes: usize,
    /// The unprivileged uid the code ran as (no process of it is left when run_python returns).
    pub uid: u32,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Run `code` as a Python script in the sandbox.
pub fn run_python(code: &str, limits: &Limits) -> Result<Outcome> {
    run_python_with_input(code, "", limits)
}

/// Same, with `stdin` fed to the script's standard input.
pub fn run_python_with_input(code: &str, stdin: &str, limits: &Limits) -> Result<Outcome> {
    let python = find_python(limits)?;
    let uid = fresh_uid();
    let dir = TempDir::create(uid)?;
    let script = dir.path.join("main.py");
    std::fs::write(&script, code).context("writing the script into the sandbox dir")?;
    chown(&script, uid)?;
    let cg = Cgroups::create(uid, limits);

    // Everything the child needs is prepared here: after fork only async-signal-safe calls are allowed.
    let c = |s: &[u8]| CString::new(s).expect("no NUL in fixed paths");
    let workdir = c(dir.path.as_os_str().as_bytes());
    let (slash, tmp, procfs, tmpfs) = (c(b"/"), c(b"/tmp"), c(b"proc"), c(b"tmpfs"));
    let proc_dir = c(b"/proc");
    let covered: Vec<CString> = ["/var/tmp", "/dev/shm", "/run/lock"].iter().map(|p| c(p.as_bytes())).collect();
    let ro_opts = c(b"size=4k,mode=555");
    let cg_procs: Vec<CString> = cg.procs_files();
    let rlimits = [
        (libc::RLIMIT_CPU, limits.cpu_secs, limits.cpu_secs + 1),
        (libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (libc::RLIMIT_FSIZE, limits.max_file_bytes, limits.max_file_bytes),
        (libc::RLIMIT_NPROC, limits.max_processes, limits.max_processes),
        (libc::RLIMIT_CORE, 0, 0),
        (libc::RLIMIT_NOFILE, 256, 256),
    ];

    let mut cmd = Command::new(&python);
    cmd.args(["-E", "-s", "-B", "main.py"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/tmp")
        .env("TMPDIR", "/tmp")
        .env("LANG", "C.UTF-8")
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .env("MPLBACKEND", "Agg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    unsafe {
        cmd.pre_exec(move || {
            for f in &cg_procs {
                // "0" moves the writing process; children inherit the cgroup.
                let fd = libc::open(f.as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS | libc::CLONE_NEWPID) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &(res, soft, hard) in &rlimits {
                let r = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                if libc::setrlimit(res, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // This process stays outside the new PID namespace; its child is the namespace's init.
            forward_exit_of(libc::fork(), true)?;
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::mount(
                std::ptr::null(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
                || libc::mount(workdir.as_ptr(), tmp.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for d in &covered {
                // A missing directory is fine; anything else is not.
                let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                if libc::mount(tmpfs.as_ptr(), d.as_ptr(), tmpfs.as_ptr(), flags, ro_opts.as_ptr().cast()) != 0
                    && *libc::__errno_location() != libc::ENOENT
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // A /proc of this namespace, so the sandbox sees only its own processes.
            libc::mount(
                procfs.as_ptr(),
                proc_dir.as_ptr(),
                procfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            );
            // The init waits for Python and reaps orphans; when it exits the namespace dies.
            forward_exit_of(libc::fork(), false)?;
            if libc::chdir(tmp.as_ptr()) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let t0 = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) || e.raw_os_error() == Some(libc::EINVAL) => {
            bail!("sandbox unavailable: cannot create Linux namespaces ({e}); the python tool needs root or CAP_SYS_ADMIN and unprivileged namespaces")
        }
        Err(e) => return Err(e).with_context(|| format!("starting {}", python.display())),
    };
    let pgid = child.id() as i32;
    let mut stdin_pipe = child.stdin.take();
    let input = stdin.as_bytes().to_vec();
    let feeder = std::thread::spawn(move || {
        if let Some(p) = stdin_pipe.as_mut() {
            let _ = p.write_all(&input);
        }
        drop(stdin_pipe);
    });
    let cap = limits.max_output_bytes;
    let out_reader = read_capped(child.stdout.take(), cap);
    let err_reader = read_capped(child.stderr.take(), cap);

    let deadline = t0 + limits.wall;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            // Killing the outer child makes the namespace init die (PDEATHSIG), and with it the namespace.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    let _ = feeder.join();
    let (stdout, stdout_truncated_bytes) = out_reader.join().unwrap_or_default();
    let (stderr, stderr_truncated_bytes) = err_reader.join().unwrap_or_default();
    let code = std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s).or(status.code()).unwrap_or(-1);
    let (exit_code, signal) = if code > 128 && code < 128 + 65 { (None, Some(code - 128)) } else { (Some(code), None) };
    let killed_reason = if timed_out {
        Some(format!("wall-clock limit ({:.1} s)", limits.wall.as_secs_f64()))
    } else {
        match signal {
            Some(libc::SIGXCPU) => Some(format!("cpu time limit ({} s)", limits.cpu_secs)),
            Some(libc::SIGKILL) if cg.oom_killed() => Some("memory limit".into()),
            Some(libc::SIGKILL) => Some(format!("killed (cpu time limit {} s or memory)", limits.cpu_secs)),
            Some(libc::SIGXFSZ) => Some(format!("file size limit ({} bytes)", limits.max_file_bytes)),
            Some(s) => Some(format!("signal {s}")),
            // Python ignores SIGXFSZ, so the limit shows as EFBIG.
            None if stderr.contains("File too large") => {
                Some(format!("file size limit ({} bytes)", limits.max_file_bytes))
            }
            None if stderr.contains("MemoryError") => Some(format!("memory limit ({} MiB)", limits.memory_bytes >> 20)),
            None => None,
        }
    };
    // The namespace's processes are killed when its init exits, but dying takes a moment: return
    // only once none is left (zombies included).
    let gone_by = Instant::now() + Duration::from_secs(5);
    while processes_of(uid) > 0 && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(cg);
    drop(dir);
    Ok(Outcome {
        stdout,
        stderr,
        exit_code,
        signal,
        timed_out,
        killed_reason,
        wall_ms,
        stdout_truncated_bytes,
        stderr_truncated_bytes,
        uid,
    })
}

/// After a fork inside pre_exec: the child returns Ok to go on; the parent waits for it and exits
/// with its status (128+signal when killed). `close_all`: drop every fd first, so that the pipes
/// (and std's exec-error pipe) only stay open in the process that runs Python.
unsafe fn forward_exit_of(pid: libc::pid_t, close_all: bool) -> std::io::Result<()> {
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        return Ok(());
    }
    if close_all {
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
    } else {
        // The init keeps no pipes either, but must stay quiet: point them at nothing.
        for fd in 0..3 {
            libc::close(fd);
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    let mut status = 0;
    loop {
        let r = libc::waitpid(-1, &mut status, 0);
        if r == pid {
            break;
        }
        if r < 0 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(125);
        }
    }
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status));
    }
    libc::_exit(128 + libc::WTERMSIG(status));
}

fn read_capped<R: Read + Send + 'static>(pipe: Option<R>, cap: usize) -> std::thread::JoinHandle<(String, usize)> {
    std::thread::spawn(move || {
        let Some(mut p) = pipe else { return (String::new(), 0) };
        let (mut kept, mut dropped) = (Vec::new(), 0usize);
        let mut buf = [0u8; 8192];
        loop {
            match p.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&buf[..room]);
                    dropped += n - room;
                }
            }
        }
        let mut s = String::from_utf8_lossy(&kept).into_owned();
        if dropped > 0 {
            s.push_str(&format!("\n[... output truncated: {dropped} more bytes]"));
        }
        (s, dropped)
    })
}

/// Processes on the host owned by `uid` (the owner of /proc/PID is the process's uid).
fn processes_of(uid: u32) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .count()
}

fn find_python(limits: &Limits) -> Result<PathBuf> {
    if let Some(p) = &limits.python {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("NANBEIGE_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    // A system interpreter: one under a user's home (pyenv shims) is not readable by the sandbox uid.
    for p in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("no python3 found for the sandbox (set NANBEIGE_PYTHON)")
}

/// A uid no account uses, different for each run in this process and across processes, so the
/// per-uid process limit counts this sandbox alone.
fn fresh_uid() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
    1_900_000_000 + (std::process::id() % 100_000) * 1000 + n
}

fn chown(path: &Path, uid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).with_context(|| format!("chown {}", path.display()))
}

struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create(uid: u32) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("nanbeige-sandbox-{uid}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        chown(&path, uid)?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Optional cgroup-v1 caps on the whole process tree (memory and pids), where writable.
struct Cgroups {
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    fn create(uid: u32, limits: &Limits) -> Self {
        let mut dirs = vec![];
        let name = format!("nanbeige-sandbox-{uid}");
        let setups: [(&str, &str, String); 2] = [
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", (limits.memory_bytes * 2).to_string()),
            ("/sys/fs/cgroup/pids", "pids.max", (limits.max_processes + 4).to_string()),
        ];
        for (root, file, value) in setups {
            let dir = Path::new(root).join(&name);
            if std::fs::create_dir(&dir).is_ok() {
                if std::fs::write(dir.join(file), &value).is_ok() {
                    if root.ends_with("memory") {
                        let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), &value);
                    }
                    dirs.push(dir);
                } else {
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
        Self { dirs }
    }

    fn procs_files(&self) -> Vec<CString> {
        self.dirs.iter().map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).unwrap()).collect()
    }

    fn oom_killed(&self) -> bool {
        self.dirs.iter().any(|d| {
            std::fs::read_to_string(d.join("memory.failcnt")).is_ok_and(|s| s.trim().parse::<u64>().unwrap_or(0) > 0)
        })
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in &self.dirs {
            // The namespace's processes may take a moment to be reaped after its init exits.
            for _ in 0..200 {
                if std::fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
