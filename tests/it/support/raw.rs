//! A raw-socket WebSocket client for tests that must send frames no
//! well-behaved client library would: reserved bits, unmasked frames,
//! lying length headers, bad close payloads.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{TestNode, WAIT};

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONT: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    Frame {
        opcode: u8,
        payload: Vec<u8>,
    },
    /// The server's close code (None: close without a code).
    Close(Option<u16>),
    /// The TCP connection ended without a close frame.
    Eof,
}

impl Raw {
    pub async fn connect(node: &TestNode) -> Raw {
        Raw::connect_to(node.port, "/ws?user=conformance").await
    }

    /// Upgrade on `path` of the node on `port` and read the welcome frame.
    pub async fn connect_to(port: u16, path: &str) -> Raw {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let head_end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            raw.fill().await;
        };
        assert!(
            raw.buf.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&raw.buf)
        );
        raw.buf.drain(..head_end);
        // The welcome frame.
        match raw.next().await {
            Got::Frame {
                opcode: TEXT,
                payload,
            } => assert!(payload.starts_with(br#"{"type":"welcome""#)),
            other => panic!("no welcome: {other:?}"),
        }
        raw
    }

    pub async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("server answered")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Send one frame: FIN bit, reserved bits (RSV1-3 as 0b0xxx_0000), opcode, masked or not.
    pub async fn send(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![(u8::from(fin) << 7) | rsv | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n < 65536 => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may already have closed; what it sent is still read.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Send one masked frame a byte per write, so the server sees its
    /// header and payload in many small reads.
    pub async fn send_split(&mut self, opcode: u8, payload: &[u8]) {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        for byte in frame {
            self.stream.write_all(&[byte]).await.unwrap();
            self.stream.flush().await.unwrap();
        }
    }

    pub async fn text(&mut self, payload: &[u8]) {
        self.send(true, 0, TEXT, payload, true).await;
    }

    /// The next frame from the server (pings are reported, not answered).
    pub async fn next(&mut self) -> Got {
        loop {
            if let Some(got) = take_frame(&mut self.buf) {
                return got;
            }
            if self.fill().await == 0 {
                return Got::Eof;
            }
        }
    }

    /// Write `total` bytes of filler (after whatever `prefix` declares) in
    /// 1 MiB chunks while reading, until the server's close or EOF arrives
    /// and the writing is done or fails. Returns the bytes written and the
    /// first frame that is not a ping.
    pub async fn flood(&mut self, prefix: &[u8], total: usize) -> (usize, Got) {
        let (mut rd, mut wr) = self.stream.split();
        wr.write_all(prefix).await.unwrap();
        let chunk = vec![b'x'; 1 << 20];
        let (mut sent, mut writing, mut got) = (0, true, None);
        let mut tmp = [0u8; 4096];
        // A server that closes but neither reads nor drops the socket would
        // block the writes forever: bound the whole exchange.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            while got.is_none() {
                match take_frame(&mut self.buf) {
                    Some(Got::Frame { opcode: PING, .. }) => continue,
                    other => {
                        got = other;
                        break;
                    }
                }
            }
            if !writing && got.is_some() {
                break;
            }
            tokio::select! {
                written = wr.write_all(&chunk), if writing => match written {
                    Ok(()) => {
                        sent += chunk.len();
                        writing = sent < total;
                    }
                    Err(_) => writing = false,
                },
                n = rd.read(&mut tmp), if got.is_none() => match n {
                    Ok(0) | Err(_) => got = Some(Got::Eof),
                    Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        (sent, got.unwrap_or(Got::Eof))
    }

    /// Skip server pings; return the first other frame.
    pub async fn next_non_ping(&mut self) -> Got {
        loop {
            match self.next().await {
                Got::Frame { opcode: PING, .. } => continue,
                other => return other,
            }
        }
    }

    /// The server must answer a protocol ping command with a pong frame.
    pub async fn expect_pong_reply(&mut self, id: u64) {
        match self.next_non_ping().await {
            Got::Frame {
                opcode: TEXT,
                payload,
            } => {
                let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                assert_eq!(
                    (v["type"].as_str(), v["id"].as_u64()),
                    (Some("pong"), Some(id)),
                    "{v}"
                );
            }
            other => panic!("expected the pong reply, got {other:?}"),
        }
    }

    pub async fn expect_close(&mut self, code: u16) {
        assert_eq!(self.next_non_ping().await, Got::Close(Some(code)));
    }
}

/// Take one complete frame off the front of `buf`.
fn take_frame(buf: &mut Vec<u8>) -> Option<Got> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return None;
    }
    let payload: Vec<u8> = buf[header..header + len].to_vec();
    buf.drain(..header + len);
    if opcode == CLOSE {
        let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        return Some(Got::Close(code));
    }
    Some(Got::Frame { opcode, payload })
}
