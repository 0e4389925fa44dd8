//! Switchboard's integration tests: one binary, a module per behaviour,
//! against real nodes (in-process or the real binary), real `redis-server`
//! processes and real clients.
//!
//!   cargo test --test it                 # all of them
//!   cargo test --test it presence::      # one behaviour
//!   PROPTEST_CASES=1000000 cargo test --release --test it fuzz::

mod support;

mod admission;
mod api;
mod api_validation;
mod auth;
mod autobahn;
mod backpressure;
mod browser;
mod conformance;
mod delivery;
mod doc_examples;
mod endpoints;
mod example_client;
mod frames;
mod fuzz;
mod heartbeat;
mod history;
mod js_client;
mod limits;
mod logging;
mod permissions;
mod presence;
mod recovery;
mod recovery_faults;
mod redis_cluster;
mod redis_outage;
mod redis_tls;
mod registry;
mod settings;
mod shutdown;
mod tls;
mod tracing;
mod unsubscribe;
