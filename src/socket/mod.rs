//! An accepted WebSocket: the TCP stream itself, read and written by the
//! connection's own task.
//!
//! actix-http performs the HTTP handshake and then hands the stream over
//! (its upgrade hook, see `upgrade`), so a connection costs no HTTP
//! dispatcher, no response-body channel and none of the dispatcher's fixed
//! 8 KiB read and write buffers. What a connection holds instead:
//!
//! * reading: a buffer only while a frame is incomplete; bytes come in
//!   through one scratch buffer per worker thread (`reader`);
//! * writing: the frames the socket did not take yet, shared with every
//!   other recipient and written with one `writev` per turn (`writer`).
//!
//! Frames are actix-http's (`ws::Codec` to decode, `ws::Parser` to encode).

use std::cell::RefCell;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub(crate) mod frame;
pub(crate) mod reader;
mod writer;

pub(crate) use frame::WireFrame;
use reader::Reader;
pub(crate) use reader::{CloseReason, Inbound, Read, ReadError};
use writer::Writer;

/// Bytes read per `read` call into the thread's scratch buffer.
const SCRATCH: usize = 16 * 1024;

/// Reads per turn before the connection looks at its other work again.
const READS_PER_TURN: usize = 4;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

#[derive(Debug)]
pub(crate) struct Socket {
    io: TcpStream,
    reader: Reader,
    writer: Writer,
}

impl Socket {
    /// `early`: bytes the client sent right behind its handshake.
    pub(crate) fn new(io: TcpStream, early: &[u8], max_message_bytes: usize) -> Socket {
        let mut reader = Reader::new(max_message_bytes);
        if !early.is_empty() {
            reader.feed(early);
        }
        Socket {
            io,
            reader,
            writer: Writer::default(),
        }
    }

    /// Whether `next` has a message, failure or end to hand out.
    pub(crate) fn has_next(&self) -> bool {
        self.reader.has_next()
    }

    pub(crate) fn next(&mut self) -> Option<Read> {
        self.reader.next()
    }

    /// Ready when the socket may have bytes to read (then call `read`).
    /// Polled, not awaited: the connection's loop polls it every turn, and
    /// the `readable()` future costs a waiter to link and unlink each time.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_read_ready(cx)
    }

    /// Ready when the socket may take more bytes (then call `flush`).
    pub(crate) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_write_ready(cx)
    }

    /// Resolves when the socket may have bytes to read (then call `read`).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.io.readable().await
    }

    /// Resolves when the socket may take more bytes (then call `flush`).
    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.io.writable().await
    }

    /// Read what the socket has now and decode it; the results wait in
    /// `next`.
    pub(crate) fn read(&mut self) {
        let Socket { io, reader, .. } = self;
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            for _ in 0..READS_PER_TURN {
                if !reader.open() {
                    return;
                }
                match io.try_read(&mut scratch) {
                    Ok(0) => reader.eof(),
                    Ok(n) => reader.feed(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => reader.fail(e.into()),
                }
            }
        });
    }

    /// Queue a frame behind those not yet written.
    pub(crate) fn queue(&mut self, frame: &WireFrame) {
        self.writer.push(frame.bytes().clone());
    }

    /// Frames are waiting for the socket to take them.
    pub(crate) fn backlogged(&self) -> bool {
        !self.writer.is_empty()
    }

    /// Write what the socket takes now; `Ok(true)` once nothing waits.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        self.writer.flush(&self.io)
    }

    /// Write everything queued, waiting for the socket as needed.
    pub(crate) async fn flush_all(&mut self) -> io::Result<()> {
        while !self.flush()? {
            self.io.writable().await?;
        }
        Ok(())
    }

    /// End the connection after a close frame: write what is queued (for at
    /// most `within`), send FIN at once (a client that finished the close
    /// handshake waits for the server to close TCP, RFC 6455 §7.1.1), then
    /// read and discard until the client closes too, so that unread bytes
    /// do not turn the close into a reset that could destroy the close
    /// frame on its way.
    pub(crate) async fn close(mut self, within: Duration) {
        let deadline = Instant::now() + within;
        if tokio::time::timeout_at(deadline, self.flush_all())
            .await
            .is_err()
        {
            return;
        }
        if self.io.shutdown().await.is_err() {
            return;
        }
        let _ = tokio::time::timeout_at(deadline, async {
            let mut discard = [0u8; 512];
            loop {
                if self.io.readable().await.is_err() {
                    return;
                }
                match self.io.try_read(&mut discard) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }
}
