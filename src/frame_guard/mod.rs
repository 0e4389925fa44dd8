//! A frame-header guard between the socket and actix-http's frame parser.
//!
//! actix-http's parser only checks a frame's length once the whole frame
//! has arrived, so a client that declares a 2^62-byte payload and keeps
//! streaming makes the node buffer everything it sends. This guard reads
//! each frame header as the bytes pass by and fails the connection the
//! moment a header declares more than the limit — before any of that
//! payload is buffered. The bytes themselves pass through untouched; the
//! parser still does all the real decoding.
//!
//! It also fails reserved bits and opcodes itself (so that the good frames
//! read in the same chunk are still answered), and checks the one thing the parser cannot report distinctly: a
//! close frame whose reason is not UTF-8 must fail with 1007 (RFC 6455
//! §8.1), while actix-http reports it like a bad close code (1002).
//!
//! A refusal says where in the chunk the refused frame starts, so the
//! frames that arrived before it are still decoded and answered.

/// Largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Why the guard failed the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("a frame header declares {declared} bytes, over the limit of {limit}")]
    TooLarge { declared: u64, limit: usize },
    #[error("a control frame declares {0} bytes; at most 125 are allowed")]
    ControlTooLong(u64),
    #[error("a close frame's reason is not valid UTF-8")]
    CloseReasonNotUtf8,
    #[error("a frame has reserved bits or a reserved opcode set")]
    Reserved,
    #[error("a continuation frame with no message to continue, or a new message inside a fragmented one")]
    BadFragment,
}

/// Where the scanner is in the byte stream.
#[derive(Debug)]
enum State {
    /// Collecting a frame header (up to 14 bytes).
    Header { buf: [u8; 14], have: usize },
    /// Passing a payload through without looking at it.
    Skip { left: u64 },
    /// Collecting a close frame's payload to check its reason.
    Close {
        mask: [u8; 4],
        buf: [u8; MAX_CONTROL_PAYLOAD as usize],
        have: usize,
        len: usize,
    },
}

/// The header of one frame, once complete.
struct Header {
    fin: bool,
    /// RSV1-3 (no extension is negotiated, so they must be 0).
    rsv: u8,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
}

/// How many header bytes a frame needs given its first two bytes, and the
/// header once that many are present.
fn parse_header(buf: &[u8]) -> Result<Header, usize> {
    if buf.len() < 2 {
        return Err(2);
    }
    let masked = buf[1] & 0x80 != 0;
    let (ext, len7) = match buf[1] & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let need = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < need {
        return Err(need);
    }
    let len = len7.unwrap_or_else(|| {
        buf[2..2 + ext]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    });
    let mut mask = [0; 4];
    if masked {
        mask.copy_from_slice(&buf[2 + ext..need]);
    }
    Ok(Header {
        fin: buf[0] & 0x80 != 0,
        rsv: buf[0] & 0x70,
        opcode: buf[0] & 0x0f,
        len,
        mask,
    })
}

/// The frame-boundary scanner, separate from the stream plumbing so it can
/// be tested on byte slices.
#[derive(Debug)]
pub struct Scanner {
    limit: usize,
    state: State,
    /// Inside a fragmented data message (its first frame had no FIN).
    fragmented: bool,
}

impl Scanner {
    pub fn new(limit: usize) -> Scanner {
        Scanner {
            limit,
            state: State::Header {
                buf: [0; 14],
                have: 0,
            },
            fragmented: false,
        }
    }

    /// Look at the next chunk. On a refusal, returns how many bytes of the
    /// chunk precede the refused frame (they may still be passed on).
    pub fn scan(&mut self, mut chunk: &[u8]) -> Result<(), (usize, GuardError)> {
        let total = chunk.len();
        // Start of the frame being read, within this chunk (0 if it began earlier).
        let mut frame_start = 0;
        while !chunk.is_empty() {
            let at = total - chunk.len();
            match &mut self.state {
                State::Header { buf, have } => {
                    if *have == 0 {
                        frame_start = at;
                    }
                    // Take bytes one at a time until the header is complete:
                    // headers are at most 14 bytes, so this is cheap.
                    buf[*have] = chunk[0];
                    *have += 1;
                    chunk = &chunk[1..];
                    let header = match parse_header(&buf[..*have]) {
                        Ok(header) => header,
                        Err(_) => continue,
                    };
                    let next = self.after_header(&header).map_err(|e| (frame_start, e))?;
                    self.state = next;
                }
                State::Skip { left } => {
                    let n = (*left).min(chunk.len() as u64);
                    *left -= n;
                    chunk = &chunk[n as usize..];
                    if *left == 0 {
                        self.state = State::Header {
                            buf: [0; 14],
                            have: 0,
                        };
                    }
                }
                State::Close {
                    mask,
                    buf,
                    have,
                    len,
                } => {
                    let n = (*len - *have).min(chunk.len());
                    for (i, b) in chunk[..n].iter().enumerate() {
                        buf[*have + i] = b ^ mask[(*have + i) % 4];
                    }
                    *have += n;
                    chunk = &chunk[n..];
                    if *have == *len {
                        if *len > 2 && std::str::from_utf8(&buf[2..*len]).is_err() {
                            return Err((frame_start, GuardError::CloseReasonNotUtf8));
                        }
                        self.state = State::Header {
                            buf: [0; 14],
                            have: 0,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    fn after_header(&mut self, header: &Header) -> Result<State, GuardError> {
        // actix-http fails these too, but only after decoding and before
        // handing up the good frames read with them; failing them here lets
        // those frames be answered first.
        if header.rsv != 0 || matches!(header.opcode, 0x3..=0x7 | 0xb..=0xf) {
            return Err(GuardError::Reserved);
        }
        let control = header.opcode & 0x08 != 0;
        if !control {
            let continuation = header.opcode == 0;
            if continuation != self.fragmented {
                return Err(GuardError::BadFragment);
            }
            self.fragmented = !header.fin;
        }
        if control && header.len > MAX_CONTROL_PAYLOAD {
            return Err(GuardError::ControlTooLong(header.len));
        }
        if !control && header.len > self.limit as u64 {
            return Err(GuardError::TooLarge {
                declared: header.len,
                limit: self.limit,
            });
        }
        Ok(match (header.opcode, header.len) {
            (_, 0) => State::Header {
                buf: [0; 14],
                have: 0,
            },
            (0x8, len) => State::Close {
                mask: header.mask,
                buf: [0; MAX_CONTROL_PAYLOAD as usize],
                have: 0,
                len: len as usize,
            },
            (_, left) => State::Skip { left },
        })
    }
}

#[cfg(test)]
mod tests;
