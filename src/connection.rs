//! One task per WebSocket: everything a connection does happens here, in a
//! single `select!` over the client's frames, the outbox the hub fills, the
//! heartbeat timer and the close signal.
//!
//! Writes to the socket can block when the client stops reading, so every
//! write also watches the close signal and the heartbeat deadline: a stuck
//! client is closed (slow consumer, heartbeat timeout) instead of parking
//! its task forever. The task owns no locks; it calls the gateway for
//! commands and the hub only to register and unregister.
//!
//! One file of about 400 lines on purpose: the loop, its guarded writes and
//! its exits are one state machine, easier to check side by side.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseReason, ProtocolError, Session};
use bytestring::ByteString;
use tokio::time::Instant;
use tracing::Instrument;

use crate::auth::{self, Access, Identity};
use crate::commands::{self, Answer};
use crate::disconnect::Disconnect;
use crate::gateway::Caller;
use crate::gateway::Gateway;
use crate::handshake::Permit;
use crate::hub::{Closer, ConnId, Member};
use crate::inbound::{classify, limited};
use crate::metrics;
use crate::outbox::Outbox;
use crate::presence::ClientInfo;
use crate::protocol::{self, Command, ErrorBody, ErrorCode, Request, ServerFrame};
use crate::ratelimit::{RateLimit, Verdict};
use crate::telemetry;

/// Frames written per wake-up beyond the first, before the loop looks at
/// inbound frames and timers again.
const WRITE_BATCH: usize = 32;

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

pub fn new_conn_id() -> ConnId {
    format!("{:016x}", fastrand::u64(..)).into()
}

/// Serve one upgraded WebSocket, admitted as `client` (`Gateway::admit`),
/// until it closes. Runs on the worker that accepted it (the message
/// stream is not `Send`).
pub async fn serve(
    gw: Arc<Gateway>,
    session: Session,
    stream: actix_ws::MessageStream,
    identity: Identity,
    client: Arc<ClientInfo>,
    permit: Permit,
) {
    let conn: ConnId = client.conn.as_str().into();
    let user: Arc<str> = identity.user.as_str().into();
    // Logs inside the connection carry conn/user/node. (Its exported
    // lifecycle span is made at close by `telemetry::connection_ended`.)
    let span = tracing::info_span!("conn", conn = %conn, user = %user, node = %gw.node_id());
    let max_rate = gw.settings().max_messages_per_second;
    let stream = limited(stream, gw.settings().max_message_bytes);
    let outbox = Arc::new(Outbox::new(gw.settings().outbox_capacity));
    Connection {
        gw,
        conn,
        client,
        user,
        session,
        outbox,
        closer: Arc::new(Closer::default()),
        last_seen: Instant::now(),
        opened: std::time::SystemTime::now(),
        rate: RateLimit::new(max_rate, Instant::now()),
        token_expires: identity.expires.map(deadline_of),
        access: identity.access,
    }
    .run(stream, permit)
    .instrument(span)
    .await;
}

struct Connection {
    gw: Arc<Gateway>,
    conn: ConnId,
    /// As registered at admission.
    client: Arc<ClientInfo>,
    user: Arc<str>,
    session: Session,
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
    async fn run(mut self, mut stream: AggregatedMessageStream, permit: Permit) {
        let gw = self.gw.clone();
        let outbox = self.outbox.clone();
        let member = Member {
            outbox: outbox.clone(),
            closer: self.closer.clone(),
        };
        gw.attach(&self.conn, self.client.clone(), member).await;
        tracing::debug!("connected");

        let welcome = ServerFrame::Welcome {
            conn: &self.conn,
            node: gw.node_id(),
            user: &self.user,
            heartbeat_ms: gw.settings().heartbeat_interval.as_millis() as u64,
        }
        .encode();
        let welcomed = self.write(welcome.into()).await;
        // The handshake is over: its admission slot is free again.
        drop(permit);
        let exit = match welcomed {
            Err(exit) => exit,
            Ok(()) => self.event_loop(&mut stream, &outbox).await,
        };

        outbox.close();
        gw.detach(&self.conn).await;
        let closing = self.session.clone();
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
        // give up after a moment and let the dropped session end the socket.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing.close(reason)).await;
    }

    async fn event_loop(&mut self, stream: &mut AggregatedMessageStream, outbox: &Outbox) -> Exit {
        let interval = self.gw.settings().heartbeat_interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        // One close-signal future for the whole loop: registering a fresh
        // waiter on every delivery showed up in profiles.
        let closer = self.closer.clone();
        let closed = closer.closed();
        tokio::pin!(closed);
        // One timer for the token, moved when a refresh extends it.
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut armed_for = self.token_expires;
        let expiry = tokio::time::sleep_until(armed_for.unwrap_or(far));
        tokio::pin!(expiry);
        // The heartbeat deadline as a timer of its own, so a silent client is
        // closed at `heartbeat_timeout`, not at the next ping after it. It is
        // re-armed lazily when it fires: frames move the deadline, and
        // resetting a timer per frame would cost more than an early wake-up.
        let silence = tokio::time::sleep_until(self.heartbeat_deadline());
        tokio::pin!(silence);
        loop {
            if self.token_expires != armed_for {
                armed_for = self.token_expires;
                expiry.as_mut().reset(armed_for.unwrap_or(far));
            }
            let step = tokio::select! {
                reason = &mut closed => Err(Exit::Server(reason)),
                () = &mut expiry, if armed_for.is_some() => Err(Exit::Server(Disconnect::TokenExpired)),
                frame = outbox.recv() => match frame {
                    Some(frame) => self.write_queued(frame, outbox).await,
                    None => Err(Exit::Server(Disconnect::InternalError)),
                },
                msg = stream.recv() => self.on_message(msg).await,
                _ = ticker.tick() => self.on_tick().await,
                () = &mut silence => {
                    let deadline = self.heartbeat_deadline();
                    if Instant::now() >= deadline {
                        Err(timed_out(&self.gw))
                    } else {
                        silence.as_mut().reset(deadline);
                        Ok(())
                    }
                }
            };
            if let Err(exit) = step {
                return exit;
            }
        }
    }

    /// `refresh {token}`: a new token for the same user moves the expiry.
    fn refresh(&mut self, id: Option<u64>, token: &str) -> String {
        match auth::refreshed(self.gw.auth(), token, &self.user) {
            Ok(identity) => {
                self.token_expires = identity.expires.map(deadline_of);
                self.access = identity.access;
                ServerFrame::ok(id).encode()
            }
            Err(message) => {
                metrics::inc(&self.gw.metrics().bad_frames);
                ServerFrame::failure(id, ErrorBody::new(ErrorCode::BadToken, message)).encode()
            }
        }
    }

    /// Spend one frame of the rate budget. `Ok(Some(frame))` is the error
    /// to answer instead of processing; `Err` closes an abusive client.
    fn over_budget(&mut self, id: Option<u64>) -> Result<Option<String>, Exit> {
        match self.rate.check(Instant::now()) {
            Verdict::Allow => Ok(None),
            Verdict::Refuse => {
                metrics::inc(&self.gw.metrics().rate_limited);
                let limit = self.gw.settings().max_messages_per_second;
                let error = ErrorBody::new(
                    ErrorCode::RateLimited,
                    format!("more than {limit} frames per second; this one was dropped"),
                );
                Ok(Some(ServerFrame::failure(id, error).encode()))
            }
            Verdict::Close => {
                metrics::inc(&self.gw.metrics().rate_limited);
                Err(Exit::Server(Disconnect::RateLimitExceeded))
            }
        }
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
    /// behind it (bounded, so inbound frames and the heartbeat get a turn).
    async fn write_queued(&mut self, frame: ByteString, outbox: &Outbox) -> Result<(), Exit> {
        self.write(frame).await?;
        for _ in 0..WRITE_BATCH {
            match outbox.try_recv() {
                Some(frame) => self.write(frame).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// Send a reply after every delivery already queued: a reply never
    /// overtakes a message the hub queued before the command ran, so no
    /// message of a channel arrives after its `unsubscribe` reply.
    async fn reply(&mut self, frame: String) -> Result<(), Exit> {
        while let Some(queued) = self.outbox.try_recv() {
            self.write(queued).await?;
        }
        self.write(frame.into()).await
    }

    /// Send a command's answer. A recovering subscription's missed messages
    /// follow the reply straight to the socket, and only then are its held
    /// live messages let into the outbox (`Gateway::release`), so the client
    /// sees them in offset order with no gap and no duplicate.
    async fn answer(&mut self, answer: Answer) -> Result<(), Exit> {
        self.reply(answer.reply).await?;
        let Some(recovery) = answer.recovery else {
            return Ok(());
        };
        for (_, frame) in recovery.missed {
            metrics::inc(&self.gw.metrics().deliveries);
            self.write(frame).await?;
        }
        self.gw
            .release(&self.conn, &recovery.channel, recovery.after.as_ref());
        Ok(())
    }

    /// Send a frame, unless the connection is told to close or the client
    /// has been silent past the heartbeat timeout while we wait.
    async fn write(&mut self, frame: ByteString) -> Result<(), Exit> {
        let deadline = self.heartbeat_deadline();
        guarded(self.session.text(frame), deadline, &self.closer, &self.gw).await
    }

    async fn on_tick(&mut self) -> Result<(), Exit> {
        let deadline = self.heartbeat_deadline();
        if Instant::now() >= deadline {
            return Err(timed_out(&self.gw));
        }
        guarded(self.session.ping(b""), deadline, &self.closer, &self.gw).await
    }

    async fn on_message(
        &mut self,
        msg: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Result<(), Exit> {
        let msg = match msg {
            None => return Err(Exit::Gone),
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Err(Exit::Server(classify(&e))),
        };
        self.last_seen = Instant::now();
        match msg {
            AggregatedMessage::Text(text) => {
                metrics::inc(&self.gw.metrics().frames_in);
                if let Some(refused) = self.over_budget(protocol::peek_id(&text))? {
                    return self.reply(refused).await;
                }
                let answer = match protocol::decode(&text) {
                    Ok(Request {
                        id,
                        command: Command::Refresh { token },
                    }) => self.refresh(id, &token).into(),
                    Ok(request) => {
                        let caller = Caller {
                            conn: &self.conn,
                            user: &self.user,
                            access: &self.access,
                        };
                        commands::execute(&self.gw, &caller, request).await
                    }
                    Err(e) => {
                        metrics::inc(&self.gw.metrics().bad_frames);
                        ServerFrame::failure(e.id, e.error).encode().into()
                    }
                };
                self.answer(answer).await
            }
            AggregatedMessage::Binary(_) => {
                metrics::inc(&self.gw.metrics().frames_in);
                if let Some(refused) = self.over_budget(None)? {
                    return self.reply(refused).await;
                }
                metrics::inc(&self.gw.metrics().bad_frames);
                let error = ErrorBody::new(
                    ErrorCode::BadFrame,
                    "binary frames are not supported; send JSON text frames",
                );
                self.reply(ServerFrame::Error { error }.encode()).await
            }
            AggregatedMessage::Ping(payload) => {
                let deadline = self.heartbeat_deadline();
                guarded(
                    self.session.pong(&payload),
                    deadline,
                    &self.closer,
                    &self.gw,
                )
                .await
            }
            AggregatedMessage::Pong(_) => Ok(()),
            AggregatedMessage::Close(reason) => Err(Exit::Client(reason)),
        }
    }
}

/// Send through the session (text, ping or pong) unless the connection is
/// told to close or the heartbeat deadline passes while the session's queue
/// is full: a client that stops reading cannot park its task.
async fn guarded(
    send: impl Future<Output = Result<(), actix_ws::Closed>>,
    deadline: Instant,
    closer: &Closer,
    gw: &Gateway,
) -> Result<(), Exit> {
    tokio::pin!(send);
    // Fast path: the session's queue has room (the usual case), so no
    // timer and no close-signal waiter are set up for this frame.
    let first = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
    if let Poll::Ready(sent) = first {
        return sent.map_err(|_| Exit::Gone);
    }
    tokio::select! {
        sent = send => sent.map_err(|_| Exit::Gone),
        reason = closer.closed() => Err(Exit::Server(reason)),
        () = tokio::time::sleep_until(deadline) => Err(timed_out(gw)),
    }
}

fn timed_out(gw: &Gateway) -> Exit {
    metrics::inc(&gw.metrics().heartbeat_timeouts);
    Exit::Server(Disconnect::HeartbeatTimeout)
}
