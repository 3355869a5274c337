//! Running commands with a deadline, output captured to files (never a pipe a stray
//! background process could keep open).

use std::fs::File;
use std::io::Read;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Runs `cmd` to completion, or kills it (SIGKILL, by its PID) after `timeout`.
/// Stdout and stderr are captured; stdin is /dev/null unless the caller set it.
/// On a timeout the returned status is the kill's and stderr ends with a note.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let out_f = tempfile::tempfile().expect("tempfile");
    let err_f = tempfile::tempfile().expect("tempfile");
    cmd.stdout(Stdio::from(out_f.try_clone().expect("dup")));
    cmd.stderr(Stdio::from(err_f.try_clone().expect("dup")));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot start {cmd:?}: {e}"),
    };
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            Ok(None) => sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait for {cmd:?}: {e}"),
        }
    };
    let read = |mut f: File| {
        use std::io::Seek;
        let mut v = Vec::new();
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = f.read_to_end(&mut v);
        v
    };
    let stdout = read(out_f);
    let mut stderr = read(err_f);
    if timed_out {
        stderr.extend_from_slice(format!("\n[killed after {} s: {cmd:?}]\n", timeout.as_secs()).as_bytes());
    }
    Output { status, stdout, stderr }
}

/// Stdout and stderr of `out`, one after the other, as text.
pub fn output_text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    let e = String::from_utf8_lossy(&out.stderr);
    if !e.is_empty() {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&e);
    }
    s
}

/// Sends `signal` to process `pid` (a child of the test, not yet reaped, so
/// the PID cannot have been reused); false if it does not exist.
pub fn send_signal(pid: i32, signal: rustix::process::Signal) -> bool {
    rustix::process::Pid::from_raw(pid).is_some_and(|p| rustix::process::kill_process(p, signal).is_ok())
}

/// True while a process `pid` exists (signal 0).
pub fn pid_exists(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}
