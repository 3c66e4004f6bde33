//! The security sensor against the real kernel: each test performs the action itself and looks
//! for the exact event it must cause.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use ebpf::{
    PrivilegeSyscall, Protocol, SecurityConfig, SecurityEvent, SecuritySensor, SyscallClass,
};

use crate::support::ebpf_ready;

/// The tests run actions in their own process, so it must not be ignored.
fn start() -> SecuritySensor {
    SecuritySensor::start(SecurityConfig {
        ignore_self: false,
        ..Default::default()
    })
    .expect("start the security sensor")
}

/// Drains until `found` picks an event or 5 s pass; returns it and every event drained.
fn find<T>(
    sensor: &mut SecuritySensor,
    found: impl FnMut(&SecurityEvent) -> Option<T>,
) -> (Option<T>, Vec<SecurityEvent>) {
    find_within(sensor, Duration::from_secs(5), found)
}

fn find_within<T>(
    sensor: &mut SecuritySensor,
    timeout: Duration,
    mut found: impl FnMut(&SecurityEvent) -> Option<T>,
) -> (Option<T>, Vec<SecurityEvent>) {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut hit = None;
    while hit.is_none() && Instant::now() < deadline {
        sensor.wait(Duration::from_millis(100)).expect("wait");
        // The whole batch is kept: later events of the same drain may be wanted next.
        for event in sensor.drain().expect("drain") {
            if hit.is_none() {
                hit = found(&event);
            }
            seen.push(event);
        }
    }
    (hit, seen)
}

/// Prints what the programs cost per run (non-zero only with `kernel.bpf_stats_enabled=1`).
fn print_costs(sensor: &SecuritySensor) {
    for stats in sensor.program_stats().expect("program stats") {
        if stats.run_time_ns > 0 {
            eprintln!(
                "{}: {} runs, {:.0} ns a run",
                stats.program,
                stats.run_count,
                stats.run_time_ns as f64 / stats.run_count as f64
            );
        }
    }
}

/// Forks a child that runs `body` (async-signal-safe syscalls only) and exits with its result;
/// returns the child's pid once it has exited, and its exit code.
fn in_forked_child(body: impl FnOnce() -> i32) -> (u32, i32) {
    // SAFETY: the child only makes raw syscalls and _exits; no allocation, no locks.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = body();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    (pid as u32, libc::WEXITSTATUS(status))
}

#[test]
fn exec_and_exit_carry_pid_parent_argv_cwd_and_exit_code() {
    if !ebpf_ready("exec_and_exit_carry_pid_parent_argv_cwd_and_exit_code") {
        return;
    }
    let mut sensor = start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cwd = dir.path().canonicalize().expect("canonical temp dir");
    let status = Command::new("/bin/sh")
        .args(["-c", "exit 7", "oxeye-exec-test"])
        .current_dir(&cwd)
        .spawn()
        .expect("spawn sh");
    let pid = status.id();
    let output = status.wait_with_output().expect("wait for sh");
    assert_eq!(output.status.code(), Some(7));
    let (exec, mut seen) = find(&mut sensor, |e| match e {
        SecurityEvent::Exec(exec) if exec.process.pid == pid => Some(exec.clone()),
        _ => None,
    });
    let exec = exec.unwrap_or_else(|| panic!("no exec event for pid {pid} in {seen:#?}"));
    eprintln!("exec: {exec:?}");
    assert_eq!(exec.process.ppid, std::process::id());
    assert_eq!(exec.filename, "/bin/sh");
    assert_eq!(exec.argv, ["/bin/sh", "-c", "exit 7", "oxeye-exec-test"]);
    assert_eq!(exec.cwd.as_deref(), cwd.to_str());
    assert_eq!(exec.process.comm, "sh");
    let exit = seen.iter().find_map(|e| match e {
        SecurityEvent::Exit(exit) if exit.process.pid == pid => Some(exit.clone()),
        _ => None,
    });
    let exit = match exit {
        Some(exit) => exit,
        None => {
            let (exit, more) = find(&mut sensor, |e| match e {
                SecurityEvent::Exit(exit) if exit.process.pid == pid => Some(exit.clone()),
                _ => None,
            });
            seen.extend(more);
            exit.unwrap_or_else(|| panic!("no exit event for pid {pid}"))
        }
    };
    eprintln!("exit: {exit:?}");
    assert_eq!(exit.exit_code, Some(7));
    assert_eq!(exit.signal, None);
    assert_eq!(exit.process.ppid, std::process::id());
    print_costs(&sensor);
}

#[test]
fn tcp_connect_and_accept_carry_both_ends() {
    if !ebpf_ready("tcp_connect_and_accept_carry_both_ends") {
        return;
    }
    for listen_on in ["127.0.0.1:0", "[::1]:0"] {
        let mut sensor = start();
        let listener = TcpListener::bind(listen_on).expect("bind");
        let server: SocketAddr = listener.local_addr().expect("listener address");
        let accepting = std::thread::spawn(move || {
            let (mut stream, peer) = listener.accept().expect("accept");
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).expect("read");
            peer
        });
        let mut client = TcpStream::connect(server).expect("connect");
        let client_addr = client.local_addr().expect("client address");
        client.write_all(b"x").expect("write");
        let peer = accepting.join().expect("accept thread");
        assert_eq!(peer, client_addr);
        let me = std::process::id();
        let mut connect = None;
        let mut accept = None;
        let (_, seen) = find(&mut sensor, |e| {
            match e {
                SecurityEvent::Connect(c) if c.process.pid == me && c.remote == server => {
                    connect = Some(c.clone())
                }
                SecurityEvent::Accept(a) if a.process.pid == me && a.local == server => {
                    accept = Some(a.clone())
                }
                _ => {}
            }
            (connect.is_some() && accept.is_some()).then_some(())
        });
        let connect = connect.unwrap_or_else(|| panic!("no connect to {server}: {seen:#?}"));
        let accept = accept.unwrap_or_else(|| panic!("no accept on {server}: {seen:#?}"));
        eprintln!("connect: {connect:?}\naccept: {accept:?}");
        assert_eq!(connect.result, 0);
        assert_eq!(connect.protocol, Protocol::Tcp);
        assert_eq!(connect.local, client_addr);
        assert_eq!(accept.remote, client_addr);
        assert_eq!(accept.protocol, Protocol::Tcp);
        assert!(accept.result >= 0 && accept.result == accept.fd);
        print_costs(&sensor);
    }
}

#[test]
fn opens_under_a_watched_prefix_are_reported_and_others_are_not() {
    if !ebpf_ready("opens_under_a_watched_prefix_are_reported_and_others_are_not") {
        return;
    }
    let mut sensor = start();
    let watched = tempfile::tempdir().expect("temp dir");
    let unwatched = tempfile::tempdir().expect("temp dir");
    let prefix = format!("{}/", watched.path().display());
    sensor.watch_prefix(&prefix).expect("watch the temp dir");
    let secret = watched.path().join("credentials");
    let other = unwatched.path().join("credentials");
    std::fs::write(&secret, "key").expect("write secret");
    std::fs::write(&other, "key").expect("write other");
    let child = Command::new("/bin/cat")
        .arg(&secret)
        .arg(&other)
        .output()
        .expect("run cat");
    assert!(child.status.success());
    let me = std::process::id();
    let secret_path = secret.to_str().expect("utf-8 path").to_string();
    let (found, seen) = find(&mut sensor, |e| match e {
        SecurityEvent::FileOpen(open) if open.path == secret_path && open.process.comm == "cat" => {
            Some(open.clone())
        }
        _ => None,
    });
    let open = found.unwrap_or_else(|| panic!("no open of {secret_path}: {seen:#?}"));
    eprintln!("open: {open:?}");
    assert_eq!(open.process.ppid, me);
    assert!(open.result >= 0, "{open:?}");
    assert_eq!(open.flags & libc::O_ACCMODE as u32, libc::O_RDONLY as u32);
    // The test's own write of the secret (O_CREAT) was reported too, with its pid.
    assert!(
        seen.iter().any(|e| matches!(e, SecurityEvent::FileOpen(o)
            if o.path == secret_path && o.process.pid == me
                && o.flags & libc::O_CREAT as u32 != 0)),
        "{seen:#?}"
    );
    let other_path = other.to_str().expect("utf-8 path");
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, SecurityEvent::FileOpen(o) if o.path == other_path)),
        "an unwatched path was reported: {seen:#?}"
    );
    // A failed open is reported with its error.
    sensor.drain().expect("drain");
    let missing = watched.path().join("missing");
    assert!(std::fs::File::open(&missing).is_err());
    let missing_path = missing.to_str().expect("utf-8 path").to_string();
    let (failed, _) = find(&mut sensor, |e| match e {
        SecurityEvent::FileOpen(o) if o.path == missing_path => Some(o.result),
        _ => None,
    });
    assert_eq!(failed, Some(-i64::from(libc::ENOENT)));
    sensor.unwatch_prefix(&prefix).expect("unwatch");
    std::fs::read(&secret).expect("read secret");
    // Events are readable as soon as they are committed, so a short wait is enough.
    let (after, _) = find_within(&mut sensor, Duration::from_millis(500), |e| match e {
        SecurityEvent::FileOpen(o) if o.path == secret_path => Some(()),
        _ => None,
    });
    assert!(after.is_none(), "reported after unwatch");
    print_costs(&sensor);
}

#[test]
fn setuid_in_a_child_is_reported_with_its_arguments() {
    if !ebpf_ready("setuid_in_a_child_is_reported_with_its_arguments") {
        return;
    }
    let mut sensor = start();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let (pid, code) = in_forked_child(|| {
        // SAFETY: raw syscalls in the forked child.
        let a = unsafe { libc::setuid(libc::getuid()) };
        // SAFETY: as above.
        let b = unsafe { libc::setresgid(u32::MAX, u32::MAX, u32::MAX) };
        if a == 0 && b == 0 { 0 } else { 1 }
    });
    assert_eq!(code, 0);
    let mut setuid = None;
    let mut setresgid = None;
    let (_, seen) = find(&mut sensor, |e| {
        if let SecurityEvent::PrivilegeChange(p) = e
            && p.process.pid == pid
        {
            match p.syscall {
                PrivilegeSyscall::Setuid => setuid = Some(p.clone()),
                PrivilegeSyscall::Setresgid => setresgid = Some(p.clone()),
                _ => {}
            }
        }
        (setuid.is_some() && setresgid.is_some()).then_some(())
    });
    let setuid = setuid.unwrap_or_else(|| panic!("no setuid by {pid}: {seen:#?}"));
    let setresgid = setresgid.unwrap_or_else(|| panic!("no setresgid by {pid}: {seen:#?}"));
    eprintln!("setuid: {setuid:?}\nsetresgid: {setresgid:?}");
    assert_eq!(setuid.args[0] as u32, uid);
    assert_eq!(setuid.result, 0);
    assert_eq!(setuid.process.uid, uid);
    assert_eq!(setuid.process.ppid, std::process::id());
    assert_eq!(setresgid.args.map(|a| a as u32), [u32::MAX; 3]);
    print_costs(&sensor);
}

#[test]
fn ptrace_attach_names_the_tracee() {
    if !ebpf_ready("ptrace_attach_names_the_tracee") {
        return;
    }
    let mut sensor = start();
    let mut tracee = Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let target = tracee.id() as i32;
    // SAFETY: attaching to our own child, waiting for its stop, detaching.
    let attached = unsafe {
        let rc = libc::ptrace(libc::PTRACE_ATTACH, target, 0, 0);
        let mut status = 0;
        libc::waitpid(target, &mut status, 0);
        libc::ptrace(libc::PTRACE_DETACH, target, 0, 0);
        rc
    };
    let _ = tracee.kill();
    let _ = tracee.wait();
    assert_eq!(attached, 0, "PTRACE_ATTACH failed");
    let me = std::process::id();
    let (found, seen) = find(&mut sensor, |e| match e {
        SecurityEvent::Ptrace(p) if p.process.pid == me && p.target_pid == target as u32 => {
            Some(p.clone())
        }
        _ => None,
    });
    let ptrace = found.unwrap_or_else(|| panic!("no ptrace of {target}: {seen:#?}"));
    eprintln!("ptrace: {ptrace:?}");
    assert_eq!(ptrace.request_name(), "PTRACE_ATTACH");
    assert_eq!(ptrace.result, 0);
    // Detach is not a watched request.
    assert!(
        !seen.iter().any(
            |e| matches!(e, SecurityEvent::Ptrace(p) if p.request == libc::PTRACE_DETACH as i64)
        ),
        "{seen:#?}"
    );
}

#[test]
fn syscall_counts_rise_for_a_getpid_loop() {
    if !ebpf_ready("syscall_counts_rise_for_a_getpid_loop") {
        return;
    }
    const CALLS: u64 = 200_000;
    let mut sensor = start();
    let (pid, code) = in_forked_child(|| {
        for _ in 0..CALLS {
            // SAFETY: a raw getpid, no libc caching.
            unsafe { libc::syscall(libc::SYS_getpid) };
        }
        0
    });
    assert_eq!(code, 0);
    let (exit, _) = find(&mut sensor, |e| match e {
        SecurityEvent::Exit(x) if x.process.pid == pid => Some(()),
        _ => None,
    });
    assert!(exit.is_some(), "no exit event for {pid}");
    let counts = sensor.syscall_counts().expect("syscall counts");
    let child = counts
        .iter()
        .find(|c| c.pid == pid)
        .unwrap_or_else(|| panic!("no counts for {pid}"));
    let by_class: Vec<(&str, u64)> = SyscallClass::ALL
        .iter()
        .map(|c| (c.name(), child.get(*c)))
        .filter(|(_, n)| *n > 0)
        .collect();
    eprintln!(
        "counts of {pid}: {by_class:?}, {} processes counted",
        counts.len()
    );
    assert!(
        (CALLS..CALLS + 100).contains(&child.get(SyscallClass::Identity)),
        "{by_class:?}"
    );
    assert!(child.exited, "the exit was drained");
    let again = sensor.syscall_counts().expect("syscall counts");
    assert!(
        again.iter().all(|c| c.pid != pid),
        "an exited process is reported once"
    );
    let counters = sensor.counters().expect("counters");
    eprintln!("counters: {:?}", counters.kernel);
    print_costs(&sensor);
    assert_eq!(counters.kernel.ring_buffer_full, 0);
    assert_eq!(counters.malformed_records, 0);
}

#[test]
fn module_loads_and_capset_are_reported_even_when_refused() {
    if !ebpf_ready("module_loads_and_capset_are_reported_even_when_refused") {
        return;
    }
    let mut sensor = start();
    let (pid, code) = in_forked_child(|| {
        // _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
        let mut header = [0x2008_0522u32, 0];
        let mut data = [0u32; 6];
        // SAFETY: raw syscalls with valid buffers, in the forked child.
        unsafe {
            // A bad fd: refused before anything is loaded, but still reported.
            libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0);
            if libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()) != 0 {
                return 2;
            }
            // Give up nothing: set what is already there.
            if libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()) != 0 {
                return 3;
            }
        }
        0
    });
    assert_eq!(code, 0);
    let mut module = None;
    let mut capset = None;
    let (_, seen) = find(&mut sensor, |e| {
        match e {
            SecurityEvent::ModuleLoad(m) if m.process.pid == pid => module = Some(m.clone()),
            SecurityEvent::PrivilegeChange(p)
                if p.process.pid == pid && p.syscall == PrivilegeSyscall::Capset =>
            {
                capset = Some(p.clone())
            }
            _ => {}
        }
        (module.is_some() && capset.is_some()).then_some(())
    });
    let module = module.unwrap_or_else(|| panic!("no finit_module by {pid}: {seen:#?}"));
    let capset = capset.unwrap_or_else(|| panic!("no capset by {pid}: {seen:#?}"));
    eprintln!("module: {module:?}\ncapset: {capset:?}");
    assert_eq!(module.fd, Some(-1));
    // EBADF, or ENOSYS on kernels built without module support (such as this project's VMs).
    assert!(
        [-i64::from(libc::EBADF), -i64::from(libc::ENOSYS)].contains(&module.result),
        "{module:?}"
    );
    assert_eq!(capset.result, 0);
    // Root's effective set includes CAP_SYS_ADMIN (21).
    let [effective, permitted, _] = capset.capabilities.expect("capset carries the sets");
    assert_ne!(effective & (1 << 21), 0, "{capset:?}");
    assert_eq!(effective & !permitted, 0, "{capset:?}");
    print_costs(&sensor);
}

#[test]
fn threads_of_a_live_process_add_up_in_its_counts() {
    if !ebpf_ready("threads_of_a_live_process_add_up_in_its_counts") {
        return;
    }
    const THREADS: u64 = 4;
    const CALLS: u64 = 50_000;
    let mut sensor = start();
    // Four threads of one process call getpid; the process then waits on stdin, still alive.
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            &format!(
                "import os, sys, threading\n\
                 def burn():\n    for _ in range({CALLS}): os.getpid()\n\
                 ts = [threading.Thread(target=burn) for _ in range({THREADS})]\n\
                 [t.start() for t in ts]; [t.join() for t in ts]\n\
                 print('done', flush=True); sys.stdin.read()"
            ),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    assert_eq!(line.trim(), "done");
    let pid = child.id();
    let counts = sensor.syscall_counts().expect("syscall counts");
    let live = counts
        .iter()
        .find(|c| c.pid == pid)
        .unwrap_or_else(|| panic!("no counts for the live process {pid}"));
    assert!(!live.exited);
    assert!(
        live.get(SyscallClass::Identity) >= THREADS * CALLS,
        "{} identity syscalls, expected at least {}",
        live.get(SyscallClass::Identity),
        THREADS * CALLS
    );
    drop(child.stdin.take());
    child.wait().expect("wait");
    let (exit, _) = find(&mut sensor, |e| match e {
        SecurityEvent::Exit(x) if x.process.pid == pid => Some(()),
        _ => None,
    });
    assert!(exit.is_some(), "no exit event for {pid}");
    let after = sensor.syscall_counts().expect("syscall counts");
    let gone: Vec<_> = after.iter().filter(|c| c.pid == pid).collect();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(gone[0].exited);
    assert!(gone[0].get(SyscallClass::Identity) >= live.get(SyscallClass::Identity));
}

#[test]
fn relative_dotdot_and_symlinked_opens_of_watched_files_are_caught_with_the_real_path() {
    if !ebpf_ready(
        "relative_dotdot_and_symlinked_opens_of_watched_files_are_caught_with_the_real_path",
    ) {
        return;
    }
    let mut sensor = start();
    let base = tempfile::tempdir().expect("temp dir");
    let base = base.path().canonicalize().expect("canonical temp dir");
    // A watched file and a watched directory with a file two levels down.
    let secret = base.join("secret");
    std::fs::write(&secret, "key").expect("write secret");
    std::fs::create_dir_all(base.join("sub")).expect("mkdir sub");
    let vault = base.join("vault");
    std::fs::create_dir_all(vault.join("inner")).expect("mkdir vault/inner");
    let deep = vault.join("inner").join("token");
    std::fs::write(&deep, "t").expect("write token");
    std::os::unix::fs::symlink(&secret, base.join("sub").join("link")).expect("symlink");
    sensor
        .watch_prefix(secret.to_str().expect("utf-8"))
        .expect("watch the file");
    sensor
        .watch_prefix(&format!("{}/", vault.display()))
        .expect("watch the directory");
    let secret_path = secret.to_str().expect("utf-8").to_string();
    let deep_path = deep.to_str().expect("utf-8").to_string();
    let cases: [(&str, String, &str); 4] = [
        (
            "relative",
            format!("cd {} && cat secret", base.display()),
            &secret_path,
        ),
        (
            "dot-dot",
            format!("cat {}/sub/../secret", base.display()),
            &secret_path,
        ),
        (
            "symlink",
            format!("cat {}/sub/link", base.display()),
            &secret_path,
        ),
        (
            "relative under a watched directory",
            format!("cd {}/inner && cat token", vault.display()),
            &deep_path,
        ),
    ];
    for (what, script, expected) in cases {
        sensor.drain().expect("drain");
        let child = Command::new("/bin/sh")
            .args(["-c", &script])
            .output()
            .expect("run sh");
        assert!(child.status.success(), "{what}: {script}");
        let (found, seen) = find(&mut sensor, |e| match e {
            SecurityEvent::FileOpen(o) if o.process.comm == "cat" && o.path == expected => {
                Some(o.clone())
            }
            _ => None,
        });
        let open = found.unwrap_or_else(|| panic!("{what}: no open of {expected}: {seen:#?}"));
        assert!(open.result >= 0, "{what}: {open:?}");
        assert!(!open.path_truncated, "{what}: {open:?}");
    }
    // An unwatched file next to them stays unreported, however it is named.
    std::fs::write(base.join("sub").join("plain"), "p").expect("write plain");
    sensor.drain().expect("drain");
    let child = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("cd {}/sub && cat plain ../sub/plain", base.display()),
        ])
        .output()
        .expect("run sh");
    assert!(child.status.success());
    let (plain, _) = find_within(&mut sensor, Duration::from_millis(500), |e| match e {
        SecurityEvent::FileOpen(o) if o.path.ends_with("plain") => Some(o.clone()),
        _ => None,
    });
    assert!(plain.is_none(), "an unwatched file was reported: {plain:?}");
}

#[test]
fn failed_relative_opens_of_watched_files_are_reported_with_the_full_path() {
    if !ebpf_ready("failed_relative_opens_of_watched_files_are_reported_with_the_full_path") {
        return;
    }
    use std::ffi::CString;
    use std::os::unix::fs::PermissionsExt;
    let mut sensor = start();
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().canonicalize().expect("canonical temp dir");
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Root-only files: a user's opens of them fail with EACCES.
    let private = |p: &std::path::Path| {
        std::fs::write(p, "k").expect("write");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    let secret = base.join("secret");
    private(&secret);
    let vault = base.join("vault");
    std::fs::create_dir(&vault).expect("mkdir vault");
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let token = vault.join("token");
    private(&token);
    private(&base.join("plain"));
    sensor
        .watch_prefix(secret.to_str().expect("utf-8"))
        .expect("watch the file");
    sensor
        .watch_prefix(&format!("{}/", vault.display()))
        .expect("watch the directory");
    let c = |s: &str| CString::new(s).expect("no NUL");
    let nobody = 65534;
    // (what, directory, name, through openat with a directory fd, expected path)
    let cases = [
        (
            "open in the working directory",
            &base,
            "secret",
            false,
            &secret,
        ),
        ("openat with a directory fd", &base, "secret", true, &secret),
        ("under a watched directory", &vault, "token", false, &token),
    ];
    for (what, dir, name, with_dirfd, expected) in cases {
        sensor.drain().expect("drain");
        let dir_c = c(dir.to_str().expect("utf-8"));
        let name_c = c(name);
        let (pid, code) = in_forked_child(|| {
            // SAFETY: raw syscalls on NUL-terminated strings prepared before the fork.
            unsafe {
                let dirfd = libc::open(dir_c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                if libc::chdir(dir_c.as_ptr()) != 0 || libc::setuid(nobody) != 0 {
                    return 2;
                }
                let fd = if with_dirfd {
                    libc::openat(dirfd, name_c.as_ptr(), libc::O_RDONLY)
                } else {
                    libc::open(name_c.as_ptr(), libc::O_RDONLY)
                };
                if fd >= 0 { 3 } else { 0 }
            }
        });
        assert_eq!(code, 0, "{what}: the open should have failed");
        let expected = expected.to_str().expect("utf-8").to_string();
        let (found, seen) = find(&mut sensor, |e| match e {
            // (The child's open of the directory itself may be reported first.)
            SecurityEvent::FileOpen(o) if o.process.pid == pid && o.result < 0 => Some(o.clone()),
            _ => None,
        });
        let open = found.unwrap_or_else(|| panic!("{what}: no event of pid {pid}: {seen:#?}"));
        assert_eq!(open.path, expected, "{what}: {open:?}");
        assert_eq!(open.result, -13, "{what}: EACCES: {open:?}");
        assert_eq!(open.process.uid, nobody, "{what}: {open:?}");
    }
    // A failed relative open of an unwatched file next to them stays unreported.
    sensor.drain().expect("drain");
    let dir_c = c(base.to_str().expect("utf-8"));
    let plain = c("plain");
    let (pid, code) = in_forked_child(|| {
        // SAFETY: as above.
        unsafe {
            if libc::chdir(dir_c.as_ptr()) != 0 || libc::setuid(nobody) != 0 {
                return 2;
            }
            if libc::open(plain.as_ptr(), libc::O_RDONLY) >= 0 {
                3
            } else {
                0
            }
        }
    });
    assert_eq!(code, 0);
    let (plain, _) = find_within(&mut sensor, Duration::from_millis(500), |e| match e {
        SecurityEvent::FileOpen(o) if o.process.pid == pid => Some(o.clone()),
        _ => None,
    });
    assert!(plain.is_none(), "an unwatched file was reported: {plain:?}");
}
