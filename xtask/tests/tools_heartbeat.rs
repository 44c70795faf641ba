//! The heartbeat of `tools/ensure-tools.sh` (`tools/heartbeat.sh`): a long build prints a line
//! saying what it builds and for how long at least every `HEARTBEAT_SECONDS`, and the build's
//! exit status comes through. A sleep-based build function stands in for a Go build, with a
//! one-second heartbeat so the test takes seconds; the test is bounded by a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn heartbeat_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("tools/heartbeat.sh")
}

/// Runs `body` in bash with the heartbeat sourced, killing it after 60 s.
fn bash(body: &str) -> (i32, String) {
    let script = format!(
        "set -euo pipefail\nHEARTBEAT_SECONDS=1\n. '{}'\n{body}\n",
        heartbeat_script().display()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the heartbeat test did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_long_build_says_it_is_still_building() {
    let (code, stderr) = bash(
        "build() { sleep 3.5; echo built > /dev/null; }\n\
         run_with_heartbeat 'kube 1.36.2' build\n\
         echo 'after the build' >&2",
    );
    assert_eq!(code, 0, "{stderr}");
    let beats: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[tools] kube 1.36.2: still building ("))
        .collect();
    assert!(beats.len() >= 2, "expected a line every second: {stderr}");
    assert!(beats[0].ends_with("s)"), "{stderr}");
    assert!(stderr.ends_with("after the build\n"), "{stderr}");
}

#[test]
fn a_failed_build_keeps_its_exit_status_and_a_quick_one_is_silent() {
    let (code, stderr) = bash(
        "run_with_heartbeat 'quick 1' true\n\
         failing() { sleep 1.5; return 7; }\n\
         status=0; run_with_heartbeat 'etcd 3.6.14' failing || status=$?\n\
         echo \"status=$status\" >&2",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("status=7"), "{stderr}");
    assert!(
        !stderr.contains("quick 1"),
        "a quick build prints no heartbeat: {stderr}"
    );
}

#[test]
fn durations_read_as_minutes_and_seconds() {
    let (code, stderr) =
        bash("format_duration 150 >&2; echo >&2; format_duration 42 >&2; echo >&2");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr, "2m30s\n42s\n");
}
