//! The frames waiting for a socket that would block, written with one
//! vectored write per turn.
//!
//! The queue holds shared frames (`Bytes`), so nothing is copied on the way
//! to the kernel: a wake-up of the connection writes every frame its outbox
//! had with one `writev`. It is empty almost always, and gives its memory
//! back when it drains, so an idle connection holds no buffer at all.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use actix_web::web::Bytes;
use tokio::net::TcpStream;

/// Frames handed to one `writev` (Linux takes up to 1024; more rarely helps).
const MAX_SLICES: usize = 64;

/// Queue capacity kept after draining; more is released.
const RETAINED: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Writer {
    queue: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    sent: usize,
}

impl Writer {
    pub(crate) fn push(&mut self, frame: Bytes) {
        self.queue.push_back(frame);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Write what the socket takes without blocking. `Ok(true)` once the
    /// queue is empty; `Ok(false)` if the socket is full (wait until it is
    /// writable, then call again).
    pub(crate) fn flush(&mut self, io: &TcpStream) -> io::Result<bool> {
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, frame) in slices.iter_mut().zip(self.queue.iter()) {
                let bytes = if count == 0 {
                    &frame[self.sent..]
                } else {
                    &frame[..]
                };
                *slot = IoSlice::new(bytes);
                count += 1;
            }
            match io.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.queue.capacity() > RETAINED {
            self.queue = VecDeque::new();
        }
        Ok(true)
    }

    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let front = self.queue[0].len() - self.sent;
            if written < front {
                self.sent += written;
                return;
            }
            written -= front;
            self.sent = 0;
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_resume_inside_a_frame() {
        let mut writer = Writer::default();
        for frame in ["abc", "de", "fghij"] {
            writer.push(Bytes::from_static(frame.as_bytes()));
        }
        writer.advance(4);
        assert_eq!(writer.queue.len(), 2);
        assert_eq!(writer.sent, 1);
        writer.advance(1);
        assert_eq!(writer.queue.len(), 1);
        assert_eq!(writer.sent, 0);
        writer.advance(5);
        assert!(writer.is_empty());
    }
}
