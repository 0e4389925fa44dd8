//! Wake-ups of connection tasks, gathered per worker thread.
//!
//! Deliveries are queued by the broker's reader, which runs on another
//! thread than the connections (actix workers). Waking a task from another
//! thread makes its runtime write to an eventfd to unpark the worker: one
//! system call per delivery, which profiles showed as about a third of the
//! write system calls of a node under fan-out load. Instead, an outbox hands
//! its consumer's waker to the relay of the worker that owns the connection;
//! the relay is woken once for a whole batch (one cross-thread wake-up), and
//! wakes the connections from their own thread, where a wake-up is a push to
//! the local run queue.

use std::cell::RefCell;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use futures_util::task::AtomicWaker;

#[derive(Debug, Default)]
pub(crate) struct Relay {
    /// Wakers of connections with something new, waiting for the relay.
    pending: Mutex<Vec<Waker>>,
    /// The relay task's own waker.
    waker: AtomicWaker,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Relay>>> = const { RefCell::new(None) };
}

impl Relay {
    /// This worker thread's relay; its task is spawned on first use, so this
    /// must run on a worker (inside its `LocalSet`).
    pub(crate) fn current() -> Arc<Relay> {
        CURRENT.with(|current| {
            current
                .borrow_mut()
                .get_or_insert_with(|| {
                    let relay = Arc::new(Relay::default());
                    tokio::task::spawn_local(run(relay.clone()));
                    relay
                })
                .clone()
        })
    }

    /// Wake `waker` from the relay's thread.
    pub(crate) fn wake(&self, waker: Waker) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let first = pending.is_empty();
        pending.push(waker);
        drop(pending);
        // Later ones join the batch the first one announced.
        if first {
            self.waker.wake();
        }
    }
}

/// Wake every pending connection, whenever there are some.
async fn run(relay: Arc<Relay>) {
    let mut batch = Vec::new();
    poll_fn(|cx| {
        // Registered before the batch is taken: a waker pushed after the
        // swap finds the list empty and wakes this task again.
        relay.waker.register(cx.waker());
        std::mem::swap(
            &mut *relay.pending.lock().unwrap_or_else(|e| e.into_inner()),
            &mut batch,
        );
        for waker in batch.drain(..) {
            waker.wake();
        }
        if batch.capacity() > 1024 {
            batch = Vec::new();
        }
        Poll::<()>::Pending
    })
    .await;
}
