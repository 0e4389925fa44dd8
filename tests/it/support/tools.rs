//! Programs besides the node that some tests run: whether they are here,
//! and Node.js test files run with the spec reporter.

use std::path::Path;
use std::process::{Command, Stdio};

/// Whether `program args` runs and succeeds.
pub fn available(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `have`, or — where a tool is missing — false after saying the test is
/// skipped. scripts/test installs every tool, so under CI a missing one
/// fails the test instead; plain `cargo test` may run without them.
pub fn present(have: bool, what: &str) -> bool {
    if !have {
        assert!(std::env::var_os("CI").is_none(), "CI must provide {what}");
        eprintln!("SKIPPED: {what} is not installed (scripts/test installs it)");
    }
    have
}

/// Run `node ARGS` in `dir` with `env` (Node's test runner, spec reporter)
/// and return its output, once it says every test passed and `count` ran.
pub async fn node_tests(dir: &Path, args: &[&str], env: &[(&str, String)], count: usize) -> String {
    let mut command = Command::new("node");
    command
        .current_dir(dir)
        .args(["--test", "--test-reporter=spec"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "node --test {args:?} failed");
    // The spec reporter's summary: nothing failed, all of them ran.
    assert!(
        stdout.contains("ℹ fail 0") && stdout.contains(&format!("ℹ pass {count}\n")),
        "{stdout}"
    );
    stdout
}
