//! One task per WebSocket: everything a connection does happens here, in a
//! single `select!` over the client's frames, the outbox the hub fills, the
//! socket becoming writable, the heartbeat timer and the close signal.
//!
//! The task owns its socket (`socket::Socket`): deliveries go from the
//! outbox straight into one vectored write, with no other task in between.
//! A socket that does not take them (the client stops reading) leaves them
//! queued; the loop then reads no further frames and takes nothing more
//! from the outbox, which fills up and closes the connection as a slow
//! consumer, while the close signal and the heartbeat deadline still end a
//! stuck client. The task owns no locks; it calls the gateway for commands
//! and the hub only to register and unregister.
//!
//! The loop, its events and its exits are one state machine, kept in this
//! file to be checked side by side; what a client's frame does is in
//! `client_frames`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use crate::auth::{Access, Identity};
use crate::commands::Answer;
use crate::disconnect::Disconnect;
use crate::gateway::Gateway;
use crate::handshake::Permit;
use crate::hub::{Closer, ConnId, Member};
use crate::metrics;
use crate::outbox::Outbox;
use crate::presence::ClientInfo;
use crate::protocol::ServerFrame;
use crate::ratelimit::RateLimit;
use crate::relay::Relay;
use crate::socket::{CloseReason, Socket, WireFrame};
use crate::telemetry;

mod client_frames;

/// Frames taken from the outbox per wake-up beyond the first, and so
/// written with one `writev`, before the loop looks at its other work.
const WRITE_BATCH: usize = 64;

/// How long a close handshake may take before the socket is simply dropped.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the loop ended.
enum Exit {
    /// The server closes, with a code from the table.
    Server(Disconnect),
    /// The client sent a close frame; echo it.
    Client(Option<CloseReason>),
    /// The socket is gone.
    Gone,
}

/// What woke the loop.
enum Event {
    Close(Disconnect),
    Deliver(Option<WireFrame>),
    Readable,
    Inbound,
    Writable,
    /// A deadline of `next_wake` passed.
    Timer,
    SocketError,
}

pub fn new_conn_id() -> ConnId {
    format!("{:016x}", fastrand::u64(..)).into()
}

/// Serve one upgraded WebSocket, admitted as `client` (`Gateway::admit`),
/// until it closes; spawned on the worker that accepted it.
///
/// Not an `async fn`: its arguments would stay in the task next to the
/// `Connection` they were moved into. The task's size is what every idle
/// connection costs, so it holds only the connection and its loop.
pub(crate) fn serve(
    gw: Arc<Gateway>,
    socket: Socket,
    identity: Identity,
    client: Arc<ClientInfo>,
    permit: Permit,
) -> impl std::future::Future<Output = ()> {
    let conn: ConnId = client.conn.as_str().into();
    let user: Arc<str> = identity.user.as_str().into();
    // Logs inside the connection carry conn/user/node. (Its exported
    // lifecycle span is made at close by `telemetry::connection_ended`.)
    let span = tracing::info_span!("conn", conn = %conn, user = %user, node = %gw.node_id());
    let max_rate = gw.settings().max_messages_per_second;
    let outbox = Arc::new(Outbox::with_relay(
        gw.settings().outbox_capacity,
        Relay::current(),
    ));
    Connection {
        gw,
        conn,
        client,
        user,
        socket,
        outbox,
        closer: Arc::new(Closer::default()),
        last_seen: Instant::now(),
        opened: std::time::SystemTime::now(),
        rate: RateLimit::new(max_rate, Instant::now()),
        token_expires: identity.expires.map(deadline_of),
        access: identity.access,
    }
    .run(permit)
    .instrument(span)
}

struct Connection {
    gw: Arc<Gateway>,
    conn: ConnId,
    /// As registered at admission.
    client: Arc<ClientInfo>,
    user: Arc<str>,
    socket: Socket,
    /// Deliveries queued by the hub; replies wait behind them (see `reply`).
    outbox: Arc<Outbox>,
    closer: Arc<Closer>,
    last_seen: Instant,
    opened: std::time::SystemTime,
    rate: RateLimit,
    /// When the token runs out (None: anonymous); moved by `refresh`.
    token_expires: Option<Instant>,
    /// What the token allows; replaced by `refresh`.
    access: Access,
}

/// The local instant of a wall-clock expiry (already past: now).
fn deadline_of(at: std::time::SystemTime) -> Instant {
    let left = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left
}

impl Connection {
    async fn run(mut self, permit: Permit) {
        let member = Member {
            outbox: self.outbox.clone(),
            closer: self.closer.clone(),
        };
        // The one-off steps (registry and presence calls) are boxed, so that
        // their futures are not part of the connection's task for its whole
        // life: the task's size is what every idle connection costs.
        Box::pin(self.gw.attach(&self.conn, self.client.clone(), member)).await;
        tracing::debug!("connected");

        // In a block: the welcome is not kept for the connection's life.
        let welcomed = {
            let welcome = WireFrame::text(
                &ServerFrame::Welcome {
                    conn: &self.conn,
                    node: self.gw.node_id(),
                    user: &self.user,
                    heartbeat_ms: self.gw.settings().heartbeat_interval.as_millis() as u64,
                }
                .encode(),
            );
            self.send(&welcome)
        };
        // The handshake is over: its admission slot is free again.
        drop(permit);
        let exit = match welcomed {
            Err(exit) => exit,
            Ok(()) => self.event_loop().await,
        };

        self.outbox.close();
        Box::pin(self.gw.detach(&self.conn)).await;
        let reason = match exit {
            Exit::Server(d) => {
                self.closed_with(d.code(), d.name());
                tracing::debug!(code = d.code(), reason = d.name(), "closing");
                Some(d.close_reason())
            }
            Exit::Client(reason) => {
                let code = reason.as_ref().map_or(1005, |r| u16::from(r.code));
                self.closed_with(code, "client_closed");
                tracing::debug!(?reason, "client closed");
                reason
            }
            Exit::Gone => {
                self.closed_with(1006, "connection_lost");
                tracing::debug!("socket gone");
                return;
            }
        };
        // A client that does not read cannot take a close frame either:
        // `close` gives up after a moment and drops the socket.
        self.socket.queue(&WireFrame::close(reason));
        Box::pin(self.socket.close(CLOSE_TIMEOUT)).await;
    }

    async fn event_loop(&mut self) -> Exit {
        let interval = self.gw.settings().heartbeat_interval;
        // One timer for the three deadlines: the next ping, the heartbeat
        // timeout (a silent client is closed at `heartbeat_timeout`, not at
        // the next ping after it) and the token's expiry. Each timer is
        // part of every idle connection's memory, so there is one. Frames
        // move the heartbeat deadline without touching the timer: when it
        // fires early, it is re-armed (cheaper than a reset per frame).
        let mut next_ping = Instant::now() + interval;
        let timer = tokio::time::sleep_until(self.next_wake(next_ping));
        tokio::pin!(timer);
        loop {
            let event = std::future::poll_fn(|cx| self.poll_event(cx, timer.as_mut())).await;
            let step = match event {
                Event::Close(reason) => Err(Exit::Server(reason)),
                Event::Deliver(Some(frame)) => self.deliver(&frame),
                Event::Deliver(None) => Err(Exit::Server(Disconnect::InternalError)),
                Event::Readable => {
                    self.socket.read();
                    Ok(())
                }
                Event::Inbound => {
                    let expiry = self.token_expires;
                    let step = self.on_read().await;
                    if self.token_expires != expiry {
                        // `refresh` moved the expiry, maybe closer.
                        timer.as_mut().reset(self.next_wake(next_ping));
                    }
                    step
                }
                Event::Writable => self.flush(),
                Event::Timer => {
                    let step = self.on_timer(&mut next_ping, interval);
                    timer.as_mut().reset(self.next_wake(next_ping));
                    step
                }
                Event::SocketError => Err(Exit::Gone),
            };
            if let Err(exit) = step {
                return exit;
            }
        }
    }

    /// What the loop does next. Everything is polled in place (no futures
    /// made and dropped per turn: this runs once per delivery batch), in a
    /// fixed order: the close signal and the timer first, then the client's
    /// frames, then deliveries. While the socket does not take what is
    /// queued, neither new deliveries nor the client's next frames are
    /// taken on.
    fn poll_event(&self, cx: &mut Context<'_>, timer: Pin<&mut Sleep>) -> Poll<Event> {
        if let Poll::Ready(reason) = self.closer.poll_closed(cx) {
            return Poll::Ready(Event::Close(reason));
        }
        if timer.poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        if self.socket.backlogged() {
            return match self.socket.poll_writable(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Event::Writable),
                Poll::Ready(Err(_)) => Poll::Ready(Event::SocketError),
                Poll::Pending => Poll::Pending,
            };
        }
        if self.socket.has_next() {
            return Poll::Ready(Event::Inbound);
        }
        match self.socket.poll_readable(cx) {
            Poll::Ready(Ok(())) => return Poll::Ready(Event::Readable),
            Poll::Ready(Err(_)) => return Poll::Ready(Event::SocketError),
            Poll::Pending => {}
        }
        self.outbox.poll_recv(cx).map(Event::Deliver)
    }

    fn closed_with(&self, code: u16, reason: &str) {
        telemetry::connection_ended(
            self.opened,
            &self.conn,
            &self.user,
            self.gw.node_id(),
            code,
            reason,
        );
    }

    fn heartbeat_deadline(&self) -> Instant {
        self.last_seen + self.gw.settings().heartbeat_timeout
    }

    /// Write a frame from the outbox and whatever else is already queued
    /// behind it (bounded, so inbound frames and the heartbeat get a turn),
    /// all in one vectored write.
    fn deliver(&mut self, frame: &WireFrame) -> Result<(), Exit> {
        self.socket.queue(frame);
        for _ in 0..WRITE_BATCH {
            match self.outbox.try_recv() {
                Some(frame) => self.socket.queue(&frame),
                None => break,
            }
        }
        self.flush()
    }

    /// Write what the socket takes now; the rest waits for `Writable`.
    fn flush(&mut self) -> Result<(), Exit> {
        self.socket.flush().map(drop).map_err(|_| Exit::Gone)
    }

    /// Queue a frame and write what the socket takes.
    fn send(&mut self, frame: &WireFrame) -> Result<(), Exit> {
        self.socket.queue(frame);
        self.flush()
    }

    /// Send a reply after every delivery already queued: a reply never
    /// overtakes a message the hub queued before the command ran, so no
    /// message of a channel arrives after its `unsubscribe` reply.
    fn reply(&mut self, frame: &str) -> Result<(), Exit> {
        while let Some(queued) = self.outbox.try_recv() {
            self.socket.queue(&queued);
        }
        self.send(&WireFrame::text(frame))
    }

    /// Send a command's answer. A recovering subscription's missed messages
    /// follow the reply, and only then are its held live messages let into
    /// the outbox (`Gateway::release`), so the client sees them in offset
    /// order with no gap and no duplicate.
    fn answer(&mut self, answer: Answer) -> Result<(), Exit> {
        let Some(recovery) = answer.recovery else {
            return self.reply(&answer.reply);
        };
        while let Some(queued) = self.outbox.try_recv() {
            self.socket.queue(&queued);
        }
        self.socket.queue(&WireFrame::text(&answer.reply));
        for (_, frame) in recovery.missed {
            metrics::inc(&self.gw.metrics().deliveries);
            self.socket.queue(&WireFrame::text(&frame));
        }
        self.gw
            .release(&self.conn, &recovery.channel, recovery.after.as_ref());
        self.flush()
    }

    /// The earliest of the next ping, the heartbeat deadline and the
    /// token's expiry.
    fn next_wake(&self, next_ping: Instant) -> Instant {
        let wake = next_ping.min(self.heartbeat_deadline());
        self.token_expires.map_or(wake, |expiry| wake.min(expiry))
    }

    /// The timer fired: close an expired token or a silent client, or
    /// send the ping that is due.
    fn on_timer(&mut self, next_ping: &mut Instant, interval: Duration) -> Result<(), Exit> {
        let now = Instant::now();
        if self.token_expires.is_some_and(|expiry| now >= expiry) {
            return Err(Exit::Server(Disconnect::TokenExpired));
        }
        if now >= self.heartbeat_deadline() {
            return Err(timed_out(&self.gw));
        }
        if now >= *next_ping {
            // Missed pings are skipped, not sent in a burst: one says as
            // much as several.
            while *next_ping <= now {
                *next_ping += interval;
            }
            return self.send(&WireFrame::ping(b""));
        }
        Ok(())
    }
}

fn timed_out(gw: &Gateway) -> Exit {
    metrics::inc(&gw.metrics().heartbeat_timeouts);
    Exit::Server(Disconnect::HeartbeatTimeout)
}
