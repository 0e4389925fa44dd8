//! The client's frames, as the connection loop hands them over: commands
//! (rate-limited, decoded, run against the gateway, answered), `refresh`,
//! pings, and the close or read failure that ends the loop.

use tokio::time::Instant;

use super::{deadline_of, Connection, Exit};
use crate::auth;
use crate::commands;
use crate::disconnect::Disconnect;
use crate::gateway::Caller;
use crate::inbound::classify;
use crate::metrics;
use crate::protocol::{self, Command, ErrorBody, ErrorCode, Request, ServerFrame};
use crate::ratelimit::Verdict;
use crate::socket::{Inbound, Read, WireFrame};

impl Connection {
    pub(super) async fn on_read(&mut self) -> Result<(), Exit> {
        let msg = match self.socket.next() {
            None => return Ok(()),
            Some(Read::Closed) => return Err(Exit::Gone),
            Some(Read::Failed(e)) => {
                tracing::debug!(error = %e, "read failed");
                return Err(classify(&e).map_or(Exit::Gone, Exit::Server));
            }
            Some(Read::Message(msg)) => msg,
        };
        self.last_seen = Instant::now();
        match msg {
            Inbound::Text(text) => {
                metrics::inc(&self.gw.metrics().frames_in);
                if let Some(refused) = self.over_budget(protocol::peek_id(&text))? {
                    return self.reply(&refused);
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
                        // Boxed: the command's future (Redis calls and all)
                        // is large, and would otherwise be part of every
                        // idle connection's task for its whole life.
                        Box::pin(commands::execute(&self.gw, &caller, request)).await
                    }
                    Err(e) => {
                        metrics::inc(&self.gw.metrics().bad_frames);
                        ServerFrame::failure(e.id, e.error).encode().into()
                    }
                };
                self.answer(answer)
            }
            Inbound::Binary(_) => {
                metrics::inc(&self.gw.metrics().frames_in);
                if let Some(refused) = self.over_budget(None)? {
                    return self.reply(&refused);
                }
                metrics::inc(&self.gw.metrics().bad_frames);
                let error = ErrorBody::new(
                    ErrorCode::BadFrame,
                    "binary frames are not supported; send JSON text frames",
                );
                self.reply(&ServerFrame::Error { error }.encode())
            }
            Inbound::Ping(payload) => self.send(&WireFrame::pong(&payload)),
            Inbound::Pong(_) => Ok(()),
            Inbound::Close(reason) => Err(Exit::Client(reason)),
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
}
