//! The node's services, shared by every connection and HTTP handler: the
//! hub, the broker, settings, metrics and the draining flag; and the
//! commands of the wire protocol, executed against them.
//!
//! The subscription lifecycle lives here because it joins hub and broker:
//! the hub records a local subscriber first, then the broker subscription
//! is awaited (so the reply is sent only once delivery is live); when the
//! last local subscriber of a topic leaves, the broker subscription is
//! released after `unsubscribe_delay`, which absorbs quick
//! unsubscribe/resubscribe churn without Redis round trips.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
use crate::broker::{Broker, BrokerError, Publication, Published};
use crate::config::Settings;
use crate::hub::{ConnId, Hub, HubError};
use crate::keys::{Keys, Topic};
use crate::metrics::{self, Gauges, Metrics};
use crate::protocol::{
    check_channel, check_user, Command, ErrorBody, ErrorCode, MessageParts, Request, ServerFrame,
};

pub struct Gateway {
    pub settings: Settings,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub metrics: Arc<Metrics>,
    draining: AtomicBool,
}

fn broker_error(e: BrokerError) -> ErrorBody {
    ErrorBody::new(ErrorCode::BrokerUnavailable, e.to_string())
}

fn hub_error(e: HubError) -> ErrorBody {
    let code = match e {
        HubError::AlreadySubscribed => ErrorCode::AlreadySubscribed,
        HubError::NotSubscribed => ErrorCode::NotSubscribed,
        HubError::UnknownConn => ErrorCode::Internal,
    };
    ErrorBody::new(code, e.to_string())
}

impl Gateway {
    /// Wire the hub to the broker the settings ask for. Must run inside a
    /// Tokio runtime (the Redis broker spawns its subscriber task).
    pub fn new(settings: Settings) -> Result<Arc<Gateway>, BrokerError> {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let broker: Arc<dyn Broker> = match &settings.redis_url {
            None => Arc::new(MemoryBroker::new(hub.clone(), metrics.clone())),
            Some(url) => Arc::new(RedisBroker::start(
                url,
                Keys::new(settings.key_prefix.clone()),
                settings.node_id.clone(),
                settings.redis_timeout,
                settings.redis_pool_size,
                hub.clone(),
                metrics.clone(),
            )?),
        };
        Ok(Arc::new(Gateway {
            settings,
            hub,
            broker,
            metrics,
            draining: AtomicBool::new(false),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ready for traffic: not draining and the broker is reachable.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.broker.is_healthy()
    }

    pub fn gauges(&self) -> Gauges {
        let (subscriptions, channels) = self.hub.channel_counts();
        Gauges {
            connections: self.hub.connection_count(),
            subscriptions,
            channels,
            broker_up: self.broker.is_healthy(),
            draining: self.is_draining(),
        }
    }

    /// A channel name is valid and its namespace is configured.
    pub fn check_channel(&self, channel: &str) -> Result<(), ErrorBody> {
        check_channel(channel)?;
        if !self.settings.namespace_exists(channel) {
            return Err(ErrorBody::new(
                ErrorCode::UnknownChannel,
                format!("channel {channel:?} is in a namespace this gateway does not define"),
            ));
        }
        Ok(())
    }

    /// Add a local subscriber and wait until the broker delivers the topic.
    pub async fn subscribe(self: &Arc<Self>, conn: &ConnId, topic: Topic) -> Result<(), ErrorBody> {
        self.hub.add(conn, &topic).map_err(hub_error)?;
        if let Err(e) = self.broker.subscribe(&topic).await {
            // Roll back so the client can simply retry.
            if let Ok(true) = self.hub.remove(conn, &topic) {
                self.schedule_release(topic);
            }
            return Err(broker_error(e));
        }
        Ok(())
    }

    pub fn unsubscribe(self: &Arc<Self>, conn: &ConnId, topic: Topic) -> Result<(), ErrorBody> {
        if self.hub.remove(conn, &topic).map_err(hub_error)? {
            self.schedule_release(topic);
        }
        Ok(())
    }

    /// Forget a closed connection and release the topics it was the last on.
    pub fn disconnect(self: &Arc<Self>, conn: &ConnId) {
        for topic in self.hub.unregister(conn) {
            self.schedule_release(topic);
        }
    }

    fn schedule_release(self: &Arc<Self>, topic: Topic) {
        let delay = self.settings.unsubscribe_delay;
        let release = |gw: &Gateway, topic: &Topic| {
            gw.hub
                .release_if_empty(topic, || gw.broker.unsubscribe(topic));
        };
        if delay.is_zero() {
            release(self, &topic);
            return;
        }
        let gw = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            release(&gw, &topic);
        });
    }

    pub async fn publish(
        &self,
        channel: &str,
        from: &str,
        data: &RawValue,
        traceparent: Option<&str>,
    ) -> Result<Published, ErrorBody> {
        self.check_channel(channel)?;
        let publication = Publication {
            channel,
            parts: MessageParts::new(channel, from, data),
            traceparent,
        };
        let published = self
            .broker
            .publish(publication)
            .await
            .map_err(broker_error)?;
        metrics::inc(&self.metrics.messages_published);
        Ok(published)
    }

    pub async fn send_direct(
        &self,
        to: &str,
        from: &str,
        data: &RawValue,
    ) -> Result<(), ErrorBody> {
        check_user(to)?;
        let frame = ServerFrame::Direct { from, data }.encode();
        self.broker
            .send_direct(to, frame)
            .await
            .map_err(broker_error)?;
        metrics::inc(&self.metrics.direct_sent);
        Ok(())
    }

    /// Run one client command and encode its answer.
    pub async fn execute(
        self: &Arc<Self>,
        conn: &ConnId,
        user: &str,
        request: Request<'_>,
    ) -> String {
        let id = request.id;
        let result: Result<ServerFrame<'_>, ErrorBody> = match request.command {
            Command::Ping => Ok(ServerFrame::Pong { id }),
            Command::Subscribe { since: Some(_), .. } => Err(ErrorBody::new(
                ErrorCode::NotSupported,
                "`since` needs channel history, which this gateway does not keep yet",
            )),
            Command::Subscribe {
                channel,
                since: None,
            } => match self.check_channel(&channel) {
                Ok(()) => self
                    .subscribe(conn, Topic::Channel(channel))
                    .await
                    .map(|()| ServerFrame::ok(id)),
                Err(e) => Err(e),
            },
            Command::Unsubscribe { channel } => self
                .check_channel(&channel)
                .and_then(|()| self.unsubscribe(conn, Topic::Channel(channel)))
                .map(|()| ServerFrame::ok(id)),
            Command::Publish { channel, data } => {
                match self.publish(&channel, user, data, None).await {
                    Ok(p) => {
                        let encoded = ServerFrame::Reply {
                            id,
                            ok: Some(true),
                            error: None,
                            offset: Some(p.offset),
                            epoch: Some(&p.epoch),
                        }
                        .encode();
                        return encoded;
                    }
                    Err(e) => Err(e),
                }
            }
            Command::Send { user: to, data } => self
                .send_direct(&to, user, data)
                .await
                .map(|()| ServerFrame::ok(id)),
            Command::Presence { .. } => Err(ErrorBody::new(
                ErrorCode::NotSupported,
                "presence is not available in this build",
            )),
            Command::History { .. } => Err(ErrorBody::new(
                ErrorCode::NotSupported,
                "history is not available in this build",
            )),
        };
        match result {
            Ok(frame) => frame.encode(),
            Err(error) => {
                metrics::inc(&self.metrics.bad_frames);
                ServerFrame::failure(id, error).encode()
            }
        }
    }
}
