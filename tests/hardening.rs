//! Regression tests for the holes that hostile and unlucky clients found:
//! each test here failed on the code before its fix.

mod common;

use common::process::NodeProcess;
use common::raw::{Got, Raw, TEXT};

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// A header that declares 2^62 bytes must close the connection with 1009
/// before the payload is buffered: streaming 50 MB after it may not grow
/// the node by more than a few MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_declared_frame_closes_with_1009_without_buffering() {
    let node = NodeProcess::spawn(&["--max-message-bytes", "65536"], &[]);
    node.wait_listening().await;
    let pid = node.child.id();
    let mut ws = Raw::connect_to(node.port, "/ws?user=mallory").await;
    let before = rss(pid);

    let mut header = vec![0x80 | TEXT, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    let (sent, got) = ws.flood(&header, 50 << 20).await;
    let growth = rss(pid).saturating_sub(before);
    assert_eq!(got, Got::Close(Some(1009)), "after {sent} bytes");
    assert!(
        growth < 8 << 20,
        "the node grew by {growth} bytes while {sent} bytes of the frame were streamed"
    );
}
