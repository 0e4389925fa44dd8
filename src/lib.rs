//! Switchboard: a horizontally scaled WebSocket messaging gateway.
//!
//! Stateless nodes hold local sockets; every message goes through a broker
//! — Redis pub/sub in a cluster, an in-process broker on a single node — so
//! any node can deliver to any client.
//!
//! # Layout
//! Public (what the binary, tests and load harness use):
//! * [`config`] — settings, each declared once (folder: the table of layers, resolve, namespaces).
//! * [`startup`] — `Application`: bind, wire the backends, serve, drain on SIGTERM.
//! * [`gateway`] — the node's services behind a façade (private fields, verbs): channel verbs
//!   (route, authorize, subscribe, publish, presence) and user verbs (admission, attach/detach,
//!   direct, disconnect).
//! * [`ids`] — channel and user names, parsed once at the edge.
//! * [`error`] — the gateway's typed errors and their one mapping to the wire body.
//! * [`protocol`] — client commands (decode) and server frames (wire protocol v1).
//! * [`metrics`] — counters and histograms for `/metrics`.
//! * [`telemetry`] — logs (text/JSON) and OpenTelemetry traces across nodes.
//!
//! Crate-private:
//! * `upgrade` — WebSocket upgrades, taken from actix-http's upgrade hook: route, admit, answer
//!   101, then run the connection on the bare TCP stream.
//! * `http` — the App's routes: `/healthz`, `/readyz`, `/metrics`, `/` without the demo, and a
//!   plain GET on `/ws` (answered as an upgrade would be, for browsers that cannot see why one
//!   failed).
//! * `web` — the JavaScript client (`/client/v1/`) and the demo chat at `/`, from `web/`.
//! * `handshake` — what an upgrade must pass: admission, draining, origin, credentials.
//! * `auth` — JWT verification of clients (handshake and `refresh`).
//! * `api` — the server HTTP API under `/api` (API-key protected, `ResponseError`).
//! * `connection` — one task per socket; `commands` — client commands run against the gateway.
//! * `socket` — the connection's TCP stream: frames read whole and size-limited (actix-http's
//!   codec), frames written encoded once and with one vectored write per turn.
//! * `inbound` — the close code of each read error.
//! * `frame_guard` — frame-header limits checked before a payload is buffered.
//! * `echo` — `/echo`, an echoing WebSocket for conformance tests (off by default).
//! * `permissions` — who may subscribe, publish, read presence: namespace rules and personal
//!   channels, pure.
//! * `node_heartbeat` — the node's record, registry and presence refreshed on a timer; leaving on exit.
//! * `hub` — node-local topic → outbox registry (and the hold of a recovering subscription);
//!   `outbox` — the bounded per-connection queue; `relay` — its wake-ups, gathered per worker.
//! * `broker` — the `Broker` trait (publish, history, notify, subscribe, unsubscribe,
//!   is_healthy), in-memory and Redis implementations (the latter: channel streams and
//!   history, the subscriber connection, its read loop and gap repair, where connections go —
//!   one server, with TLS certificates, or the master Redis Sentinel names — and the command
//!   pool), and the envelope.
//! * `presence` — the three registries (channel presence, connections, nodes) written once over
//!   an `ExpiringSets` store, in memory or in Redis.
//! * `topic` — what the hub and broker route by; `keys` — every Redis name.
//! * `disconnect` — close reasons and their codes; `ratelimit` — the inbound frame budget.
//!
//! # Data flow of one message
//! ```text
//! client A ──publish──▶ connection task (node 1) ──▶ Gateway::publish
//!     ──▶ Broker::publish ── Redis: Lua INCR offset + PUBLISH envelope ──┐
//!                                                                        ▼
//! node 2 subscriber connection ──▶ envelope::decode ──▶ Hub::dispatch (WebSocket frame encoded
//!     once) ──▶ outbox of each local subscriber ──▶ its connection task ──▶ writev on its socket
//! ```
//! In memory mode the middle step is a direct call into the local hub.

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod broker;
pub(crate) mod commands;
pub mod config;
pub(crate) mod connection;
pub(crate) mod disconnect;
pub(crate) mod echo;
pub mod error;
pub(crate) mod frame_guard;
pub mod gateway;
pub(crate) mod handshake;
pub(crate) mod http;
pub(crate) mod hub;
pub mod ids;
pub(crate) mod inbound;
pub(crate) mod keys;
pub mod metrics;
pub(crate) mod node_heartbeat;
pub(crate) mod outbox;
pub(crate) mod permissions;
pub(crate) mod presence;
pub mod protocol;
pub(crate) mod ratelimit;
pub(crate) mod relay;
pub(crate) mod socket;
pub mod startup;
pub mod telemetry;
pub(crate) mod topic;
pub(crate) mod upgrade;
pub(crate) mod web;

pub use presence::{ClientInfo, ConnInfo, NodeInfo};
