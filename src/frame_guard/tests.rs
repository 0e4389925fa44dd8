//! The scanner fed real frames, whole and in chunks of many sizes.

use super::*;

/// A masked client frame with the given opcode and payload.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn header_declaring(len: u64) -> Vec<u8> {
    let mut out = vec![0x81, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out
}

#[test]
fn frames_within_the_limit_pass_in_any_split() {
    let mut bytes = frame(0x1, b"hello");
    bytes.extend(frame(0x2, &[7; 300]));
    bytes.extend(frame(0x9, b"ping"));
    bytes.extend(frame(0x8, b"\x03\xe8bye"));
    bytes.extend(frame(0x1, &[b'a'; 70_000]));
    for split in [1, 2, 3, 7, 13, 64, 4096, bytes.len()] {
        let mut scanner = Scanner::new(70_000);
        for chunk in bytes.chunks(split) {
            assert_eq!(scanner.scan(chunk), Ok(()), "split {split}");
        }
    }
}

#[test]
fn an_oversize_header_is_refused_before_its_payload() {
    let mut bytes = frame(0x1, b"first");
    let start = bytes.len();
    bytes.extend(header_declaring(1 << 62));
    let mut scanner = Scanner::new(65_536);
    let refused = GuardError::TooLarge {
        declared: 1 << 62,
        limit: 65_536,
    };
    assert_eq!(scanner.scan(&bytes), Err((start, refused)));

    // Split inside the header: the refusal comes with its last byte.
    let mut scanner = Scanner::new(65_536);
    assert_eq!(scanner.scan(&bytes[..start + 5]), Ok(()));
    assert_eq!(scanner.scan(&bytes[start + 5..]), Err((0, refused)));
}

#[test]
fn limits_by_kind() {
    let mut scanner = Scanner::new(10);
    assert_eq!(
        scanner.scan(&frame(0x1, &[b'a'; 11])),
        Err((
            0,
            GuardError::TooLarge {
                declared: 11,
                limit: 10
            }
        ))
    );
    let mut scanner = Scanner::new(1 << 20);
    assert_eq!(
        scanner.scan(&frame(0x9, &[0; 126])),
        Err((0, GuardError::ControlTooLong(126)))
    );
    for (byte0, name) in [
        (0xc1, "RSV1"),
        (0x91, "RSV3"),
        (0x83, "opcode 3"),
        (0x8b, "opcode 0xB"),
    ] {
        let mut bytes = frame(0x1, b"ok");
        let start = bytes.len();
        let mut bad = frame(0x1, b"x");
        bad[0] = byte0;
        bytes.extend(bad);
        let mut scanner = Scanner::new(1024);
        assert_eq!(
            scanner.scan(&bytes),
            Err((start, GuardError::Reserved)),
            "{name}"
        );
    }
}

#[test]
fn close_reasons_must_be_utf8() {
    let mut scanner = Scanner::new(1024);
    assert_eq!(scanner.scan(&frame(0x8, b"\x03\xe8ok \xce\xba")), Ok(()));
    let bad = frame(
        0x8,
        b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
    );
    for split in [1, 3, bad.len()] {
        let mut scanner = Scanner::new(1024);
        let result: Result<Vec<()>, _> = bad.chunks(split).map(|c| scanner.scan(c)).collect();
        assert!(
            matches!(result, Err((_, GuardError::CloseReasonNotUtf8))),
            "split {split}: {result:?}"
        );
    }
}

#[test]
fn fragments_must_continue_a_message() {
    let unfinished = |opcode, payload: &[u8]| {
        let mut f = frame(opcode, payload);
        f[0] &= 0x7f;
        f
    };
    // text (no FIN), ping, continuation (no FIN), continuation (FIN): fine.
    let mut ok = unfinished(0x1, b"a");
    ok.extend(frame(0x9, b""));
    ok.extend(unfinished(0x0, b"b"));
    ok.extend(frame(0x0, b"c"));
    assert_eq!(Scanner::new(64).scan(&ok), Ok(()));
    // A continuation with nothing to continue.
    assert_eq!(
        Scanner::new(64).scan(&frame(0x0, b"x")),
        Err((0, GuardError::BadFragment))
    );
    // A new text frame inside a fragmented message.
    let mut bad = unfinished(0x1, b"a");
    let start = bad.len();
    bad.extend(frame(0x1, b"b"));
    assert_eq!(
        Scanner::new(64).scan(&bad),
        Err((start, GuardError::BadFragment))
    );
}
