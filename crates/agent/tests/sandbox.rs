//! The sandbox against what untrusted code might do: reach the network, loop forever, eat memory,
//! fork without end, write outside its dir, flood its output. Each test checks the host side too.

use nanbeige_agent::sandbox::{run_python, run_python_with_input, Limits};
use std::time::{Duration, Instant};

fn limits() -> Limits {
    Limits { wall: Duration::from_secs(15), ..Limits::default() }
}

/// Processes (zombies included) of this uid on the host, with their states.
fn processes_of(uid: u32) -> Vec<String> {
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("status")) {
            let field = |k: &str| {
                s.lines().find(|l| l.starts_with(k)).map(|l| l[k.len()..].trim().to_string()).unwrap_or_default()
            };
            if field("Uid:").split_whitespace().next() == Some(uid.to_string().as_str()) {
                found.push(format!("{:?} {}", e.file_name(), field("State:")));
            }
        }
    }
    found
}

#[test]
fn runs_code_with_stdin_and_reports_exit_codes() {
    let o =
        run_python_with_input("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))", "1 2 3 4", &limits())
            .unwrap();
    assert_eq!(o.stdout.trim(), "10", "{o:?}");
    assert_eq!(o.exit_code, Some(0));
    assert!(!o.timed_out && o.killed_reason.is_none());
    let o = run_python("import sys\nprint('bad', file=sys.stderr)\nsys.exit(3)", &limits()).unwrap();
    assert_eq!(o.exit_code, Some(3));
    assert_eq!(o.stderr.trim(), "bad");
    let o = run_python("def f(:\n  pass", &limits()).unwrap();
    assert_eq!(o.exit_code, Some(1));
    assert!(o.stderr.contains("SyntaxError"), "{}", o.stderr);
}

#[test]
fn network_is_unreachable() {
    // A server on the host's loopback: the sandbox must not reach even that.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\nfor addr in [('127.0.0.1', {port}), ('1.1.1.1', 53), ('8.8.8.8', 443)]:\n    try:\n        socket.create_connection(addr, timeout=2).close()\n        print('CONNECTED', addr)\n    except OSError as e:\n        print('blocked', addr, e.errno)\n"
    );
    let o = run_python(&code, &limits()).unwrap();
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    assert_eq!(o.stdout.matches("blocked").count(), 3, "{}", o.stdout);
    assert!(!o.stdout.contains("CONNECTED"));
    assert!(listener.accept().is_err(), "the host listener got a connection");
    // Name resolution fails too.
    let o = run_python("import socket\ntry:\n    socket.getaddrinfo('example.com', 80)\n    print('RESOLVED')\nexcept OSError:\n    print('no dns')", &limits()).unwrap();
    assert_eq!(o.stdout.trim(), "no dns", "{o:?}");
}

#[test]
fn infinite_loop_is_killed_at_the_wall_clock_limit() {
    let l = Limits { wall: Duration::from_secs(2), cpu_secs: 60, ..Limits::default() };
    let t = Instant::now();
    let o = run_python("while True:\n    pass", &l).unwrap();
    let took = t.elapsed();
    assert!(o.timed_out, "{o:?}");
    assert!(o.killed_reason.as_deref().unwrap().contains("wall-clock"));
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "{took:?}");
    assert_eq!(processes_of(o.uid), Vec::<String>::new(), "a process of the sandbox survived");
}

#[test]
fn cpu_time_limit_ends_a_busy_process() {
    let l = Limits { wall: Duration::from_secs(30), cpu_secs: 1, ..Limits::default() };
    let t = Instant::now();
    let o = run_python("x = 0\nwhile True:\n    x += 1", &l).unwrap();
    assert!(!o.timed_out, "{o:?}");
    assert!(o.exit_code.is_none() && o.killed_reason.as_deref().unwrap().contains("cpu time"), "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(15));
}

#[test]
fn memory_bomb_is_contained() {
    let l = Limits { memory_bytes: 256 << 20, ..limits() };
    let o = run_python("a = []\nwhile True:\n    a.append(bytearray(16 << 20))", &l).unwrap();
    assert_ne!(o.exit_code, Some(0), "{o:?}");
    assert!(o.killed_reason.as_deref().is_some_and(|r| r.contains("memory")), "{o:?}");
    // One huge allocation is refused outright.
    let o = run_python(
        "try:\n    b = bytearray(8 << 30)\n    print('ALLOCATED')\nexcept MemoryError:\n    print('refused')",
        &l,
    )
    .unwrap();
    assert_eq!(o.stdout.trim(), "refused", "{o:?}");
}

#[test]
fn fork_bomb_is_contained_and_the_host_keeps_working() {
    // Counted forks: the children sleep, so the count shows the cap, and they must die with the run.
    let l = Limits { max_processes: 16, wall: Duration::from_secs(10), ..Limits::default() };
    let counted = "import os, time\nn = 0\nfor i in range(500):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n    n += 1\nprint(n)";
    let o = run_python(counted, &l).unwrap();
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    let n: u64 = o.stdout.trim().parse().unwrap();
    assert!(n > 0 && n < 16, "forked {n} processes");
    assert!(o.wall_ms < 8000.0, "the sleeping children must not keep the run alive: {o:?}");
    assert_eq!(processes_of(o.uid), Vec::<String>::new(), "the sleeping children survived the run");
    // A real bomb: every process forks forever.
    let l = Limits { max_processes: 32, wall: Duration::from_secs(3), ..Limits::default() };
    let t = Instant::now();
    let o = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", &l)
        .unwrap();
    assert!(o.timed_out, "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(processes_of(o.uid), Vec::<String>::new(), "bomb processes survived the run");
    // The host still forks fine.
    let t = Instant::now();
    assert!(std::process::Command::new("true").status().unwrap().success());
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn writes_outside_the_temp_dir_fail() {
    let host_tmp_file = format!("/tmp/nanbeige-sandbox-escape-{}", std::process::id());
    let code = format!(
        "import os\nopen('inside.txt', 'w').write('ok')\nprint('cwd', os.getcwd(), open('inside.txt').read())\nfor p in ['/etc/nanbeige-x', '/root/nanbeige-x', '/var/tmp/nanbeige-x', '/dev/shm/nanbeige-x', '/usr/nanbeige-x', '{host_tmp_file}']:\n    try:\n        open(p, 'w').write('x')\n        print('WROTE', p)\n    except OSError as e:\n        print('denied', p)\n"
    );
    let o = run_python(&code, &limits()).unwrap();
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    assert!(o.stdout.contains("cwd /tmp ok"), "{}", o.stdout);
    // /tmp inside is the sandbox's own dir: the write 'succeeds' there but never reaches the host's /tmp.
    assert_eq!(o.stdout.matches("denied").count(), 5, "{}", o.stdout);
    for p in [
        "/etc/nanbeige-x",
        "/root/nanbeige-x",
        "/var/tmp/nanbeige-x",
        "/dev/shm/nanbeige-x",
        "/usr/nanbeige-x",
        &host_tmp_file,
    ] {
        assert!(!std::path::Path::new(p).exists(), "{p} was written on the host");
    }
}

#[test]
fn output_and_file_size_are_capped() {
    let l = Limits { max_output_bytes: 1000, ..limits() };
    let o = run_python("import sys\nsys.stdout.write('x' * 1_000_000)\nsys.stderr.write('e' * 5000)", &l).unwrap();
    assert_eq!(o.exit_code, Some(0));
    assert_eq!(o.stdout_truncated_bytes, 999_000);
    assert!(o.stdout.starts_with(&"x".repeat(1000)) && o.stdout.contains("truncated"));
    assert_eq!(o.stderr_truncated_bytes, 4000);
    let l = Limits { max_file_bytes: 1 << 20, ..limits() };
    let o = run_python("open('big', 'wb').write(b'0' * (8 << 20))", &l).unwrap();
    assert_ne!(o.exit_code, Some(0), "{o:?}");
    assert!(o.killed_reason.as_deref().is_some_and(|r| r.contains("file size")), "{o:?}");
}
