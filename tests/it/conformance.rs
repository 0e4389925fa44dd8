//! RFC 6455 conformance, the cases of the Autobahn testsuite's sections
//! 1–7 and 9 that apply to a server, written against a raw socket and the
//! gateway endpoint `/ws` itself (the Autobahn cases proper run against
//! the echo endpoint, in the `autobahn` module; see docs/conformance.md). Each
//! case sends exact frames — fragmented, with reserved bits, unmasked,
//! invalid UTF-8, bad close codes — and checks the answer or the close
//! code RFC 6455 requires.

use std::time::{Duration, Instant};

use crate::support::raw::*;
use crate::support::TestNode;

fn ping_frame(id: u64, pad: usize) -> Vec<u8> {
    format!(r#"{{"type":"ping","id":{id}}}{}"#, " ".repeat(pad)).into_bytes()
}

async fn node() -> TestNode {
    TestNode::memory(|s| s.max_message_bytes = 70_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_sizes_and_fragmentation() {
    let node = node().await;
    let mut ws = Raw::connect(&node).await;
    // 1.1: payload lengths around the 7-bit / 16-bit / 64-bit length encodings.
    for (id, pad) in [
        (1, 0),
        (2, 125 - 24),
        (3, 126 - 24),
        (4, 65535 - 25),
        (5, 65536 - 25),
    ] {
        ws.text(&ping_frame(id, pad)).await;
        ws.expect_pong_reply(id).await;
    }
    // 5.x: a text message in fragments, with pings and an empty fragment interleaved.
    let frame = ping_frame(6, 10);
    let (a, b) = frame.split_at(7);
    ws.send(false, 0, TEXT, a, true).await;
    ws.send(true, 0, PING, b"mid", true).await;
    ws.send(false, 0, CONT, b"", true).await;
    ws.send(true, 0, CONT, b, true).await;
    assert_eq!(
        ws.next_non_ping().await,
        Got::Frame {
            opcode: PONG,
            payload: b"mid".to_vec()
        }
    );
    ws.expect_pong_reply(6).await;
    // 6.x: a valid multi-byte UTF-8 character split across fragments.
    let frame = r#"{"type":"ping","id":7,"channel":"é"}"#.as_bytes().to_vec();
    let split = frame.len() - 3; // between the two bytes of é
    ws.send(false, 0, TEXT, &frame[..split], true).await;
    ws.send(true, 0, CONT, &frame[split..], true).await;
    ws.expect_pong_reply(7).await;
    // 2.x: pings with payloads up to 125 bytes are answered with the same payload.
    for payload in [&b""[..], b"hello", &[0xffu8; 125][..]] {
        ws.send(true, 0, PING, payload, true).await;
        assert_eq!(
            ws.next_non_ping().await,
            Got::Frame {
                opcode: PONG,
                payload: payload.to_vec()
            }
        );
    }
    // 7.1: a clean close is echoed with the same code.
    ws.send(true, 0, CLOSE, &1000u16.to_be_bytes(), true).await;
    ws.expect_close(1000).await;
}

/// (FIN, RSV bits, opcode, payload, masked)
type Frame = (bool, u8, u8, Vec<u8>, bool);

/// One case per connection: send `frames`, expect a close with `code`.
async fn closes_with(node: &TestNode, code: u16, frames: &[Frame]) {
    let mut ws = Raw::connect(node).await;
    for (fin, rsv, opcode, payload, masked) in frames {
        ws.send(*fin, *rsv, *opcode, payload, *masked).await;
    }
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next_non_ping())
        .await
        .expect("answer");
    assert_eq!(got, Got::Close(Some(code)), "frames {frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_the_right_code() {
    let node = node().await;
    let ping = ping_frame(1, 0);
    let cases: Vec<(u16, Vec<Frame>)> = vec![
        // 3.x: reserved bits without an extension that defines them.
        (1002, vec![(true, 0x40, TEXT, ping.clone(), true)]),
        (1002, vec![(true, 0x10, PING, b"x".to_vec(), true)]),
        // 4.x: reserved opcodes.
        (1002, vec![(true, 0, 0x3, b"x".to_vec(), true)]),
        (1002, vec![(true, 0, 0xB, b"x".to_vec(), true)]),
        // 5.x: continuation without a start; a new message inside a fragmented one.
        (1002, vec![(true, 0, CONT, b"x".to_vec(), true)]),
        (
            1002,
            vec![
                (false, 0, TEXT, b"{".to_vec(), true),
                (true, 0, TEXT, b"}".to_vec(), true),
            ],
        ),
        // 5.x: fragmented control frame; 2.x: control payload over 125 bytes.
        (1002, vec![(false, 0, PING, b"x".to_vec(), true)]),
        (1002, vec![(true, 0, PING, vec![b'x'; 126], true)]),
        // RFC 6455 5.1: client frames must be masked.
        (1002, vec![(true, 0, TEXT, ping.clone(), false)]),
        // 6.x: invalid UTF-8 in a text message, whole or fragmented.
        (
            1007,
            vec![(true, 0, TEXT, vec![b'"', 0xc3, 0x28, b'"'], true)],
        ),
        (
            1007,
            vec![
                (false, 0, TEXT, vec![b'"', 0xed], true),
                (true, 0, CONT, vec![0xa0, 0x80, b'"'], true),
            ],
        ),
        // 9.x: over max_message_bytes, in one frame or in fragments.
        (1009, vec![(true, 0, BINARY, vec![0; 70_001], true)]),
        (
            1009,
            vec![
                (false, 0, TEXT, vec![b' '; 40_000], true),
                (true, 0, CONT, vec![b' '; 40_000], true),
            ],
        ),
    ];
    for (code, frames) in cases {
        closes_with(&node, code, &frames).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_frames_are_validated() {
    let node = node().await;
    // 7.3 / 7.7: valid codes are echoed, including application codes.
    for code in [1000u16, 1001, 1003, 1011, 3000, 3999, 4000, 4999] {
        let mut ws = Raw::connect(&node).await;
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        ws.send(true, 0, CLOSE, &payload, true).await;
        ws.expect_close(code).await;
    }
    // 7.3.1: a close without a code is answered with a close.
    let mut ws = Raw::connect(&node).await;
    ws.send(true, 0, CLOSE, b"", true).await;
    assert!(matches!(ws.next_non_ping().await, Got::Close(_)));
    // 7.9: codes that must not appear on the wire, and a 1-byte payload.
    for payload in [
        vec![0x03, 0xe7],
        vec![0x03, 0xec],
        vec![0x03, 0xed],
        vec![0x03, 0xee],
        vec![0x13, 0x88],
        vec![0x03],
    ] {
        closes_with(&node, 1002, &[(true, 0, CLOSE, payload, true)]).await;
    }
    // 7.5: a close reason that is not UTF-8 fails the connection with 1007
    // (RFC 6455 §8.1), also when the bad bytes arrive one at a time.
    closes_with(
        &node,
        1007,
        &[(true, 0, CLOSE, vec![0x03, 0xe8, 0xff, 0xfe], true)],
    )
    .await;
    let mut ws = Raw::connect(&node).await;
    ws.send_split(
        CLOSE,
        &[0x03, 0xe8, b'o', b'k', 0xce, 0xba, 0xed, 0xa0, 0x80],
    )
    .await;
    ws.expect_close(1007).await;
}

/// After a client-initiated close the node echoes it and closes TCP at
/// once (RFC 6455 §7.1.1), instead of lingering for actix's 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_closes_tcp_right_after_echoing_a_close() {
    let node = TestNode::memory(|_| {}).await;
    let mut ws = Raw::connect(&node).await;
    ws.send(true, 0, CLOSE, &1000u16.to_be_bytes(), true).await;
    ws.expect_close(1000).await;
    let echoed = Instant::now();
    assert_eq!(ws.next().await, Got::Eof);
    // The old linger was 1 s; a prompt close takes a few ms.
    let waited = echoed.elapsed();
    assert!(
        waited < Duration::from_millis(600),
        "TCP closed {waited:?} after the echo"
    );
}
