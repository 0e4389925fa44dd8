//! A connection's bounded outbound queue.
//!
//! Not a tokio mpsc channel: that allocates a 32-slot block per channel up
//! front, about 1 KiB for every idle connection. This queue is a
//! `VecDeque` that allocates only when frames are waiting and gives the
//! memory back once it drains, so an idle connection costs a few words.
//! The lock is held only to push or pop, never across an `.await`.
//!
//! The consumer is woken through an `AtomicWaker`, not a `Notify`: its
//! connection polls the outbox on every turn of its loop, and a `Notify`
//! waiter is a future to create, link and unlink each time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::relay::Relay;
use crate::socket::WireFrame;

/// Capacity kept after the queue drains; more is released.
const RETAINED: usize = 8;

#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue holds `capacity` frames: the consumer is too slow.
    Full,
    /// The connection is gone.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<WireFrame>,
    closed: bool,
}

impl State {
    fn pop(&mut self) -> Option<WireFrame> {
        let frame = self.queue.pop_front();
        if self.queue.is_empty() && self.queue.capacity() > RETAINED {
            self.queue.shrink_to(RETAINED);
        }
        frame
    }
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: AtomicWaker,
    capacity: usize,
    /// Wakes the consumer from its own thread (see `relay`); without one,
    /// the consumer is woken directly.
    relay: Option<Arc<Relay>>,
}

impl Outbox {
    /// How many frames it holds before the consumer counts as too slow.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn new(capacity: usize) -> Self {
        Outbox {
            state: Mutex::default(),
            ready: AtomicWaker::new(),
            capacity,
            relay: None,
        }
    }

    /// An outbox whose consumer runs on the thread of `relay`.
    pub(crate) fn with_relay(capacity: usize, relay: Arc<Relay>) -> Self {
        Outbox {
            relay: Some(relay),
            ..Outbox::new(capacity)
        }
    }

    /// Wake the consumer, if it waits.
    fn wake(&self) {
        match &self.relay {
            Some(relay) => {
                // Taken: until the consumer waits again, offers wake nobody.
                if let Some(waker) = self.ready.take() {
                    relay.wake(waker);
                }
            }
            None => self.ready.wake(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a frame without waiting.
    pub fn offer(&self, frame: WireFrame) -> Offer {
        let mut state = self.lock();
        if state.closed {
            return Offer::Closed;
        }
        if state.queue.len() >= self.capacity {
            return Offer::Full;
        }
        state.queue.push_back(frame);
        drop(state);
        self.wake();
        Offer::Queued
    }

    /// The next frame; None once closed and drained.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<WireFrame>> {
        if let Some(ready) = self.ready_now() {
            return Poll::Ready(ready);
        }
        self.ready.register(cx.waker());
        // A frame offered between the check and the registration did not
        // see the waker: check again.
        match self.ready_now() {
            Some(ready) => Poll::Ready(ready),
            None => Poll::Pending,
        }
    }

    fn ready_now(&self) -> Option<Option<WireFrame>> {
        let mut state = self.lock();
        match state.pop() {
            Some(frame) => Some(Some(frame)),
            None if state.closed => Some(None),
            None => None,
        }
    }

    /// The next frame, waiting for one; None once closed and drained.
    #[cfg(test)]
    pub async fn recv(&self) -> Option<WireFrame> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next frame if one is queued, without waiting.
    pub fn try_recv(&self) -> Option<WireFrame> {
        self.lock().pop()
    }

    /// Refuse further frames and drop the queued ones.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.queue = VecDeque::new();
        drop(state);
        self.wake();
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_fifo_that_releases_memory_when_drained() {
        let outbox = Outbox::new(100);
        for i in 0..100 {
            assert_eq!(
                outbox.offer(WireFrame::text(&format!("{i}"))),
                Offer::Queued
            );
        }
        assert_eq!(outbox.offer(WireFrame::text("overflow")), Offer::Full);
        for i in 0..100 {
            assert_eq!(
                outbox.recv().await.unwrap(),
                WireFrame::text(&format!("{i}"))
            );
        }
        assert!(outbox.lock().queue.capacity() <= RETAINED);
        outbox.close();
        assert_eq!(outbox.offer(WireFrame::text("late")), Offer::Closed);
        assert_eq!(outbox.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_consumer_is_woken() {
        let outbox = std::sync::Arc::new(Outbox::new(4));
        let consumer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.recv().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(outbox.offer(WireFrame::text("hello")), Offer::Queued);
        assert_eq!(consumer.await.unwrap().unwrap(), WireFrame::text("hello"));
    }
}
