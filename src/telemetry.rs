//! Logs and traces.
//!
//! Logs go to stderr as text or JSON (`log_format`), filtered by `RUST_LOG`
//! (default `info`); connection events carry the `conn`, `user` and `node`
//! fields of the connection span. Nothing is logged per message at info.
//!
//! Traces are exported with OTLP/HTTP (protobuf) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, and are
//! entirely off otherwise: then no message span is even created. The SDK
//! reads the other standard variables itself: `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (e.g.
//! `parentbased_traceidratio` and `0.01`), `OTEL_BSP_SCHEDULE_DELAY`.
//!
//! One trace follows a message: the `publish` span on the node that got it
//! (child of the client's `traceparent`, if it sent one), whose W3C context
//! travels in the Redis envelope, and a `deliver` span on every node that
//! fans it out to local subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (message spans are skipped otherwise).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes and stops the exporter when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("switchboard: flushing traces failed: {e}");
            }
        }
    }
}

fn otlp_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Install the global subscriber (logs, and traces if configured).
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    // Log filtering applies to the log output only: a span filtered out of
    // the logs (message spans are below info) must still reach the exporter.
    let fmt = fmt.with_filter(filter);
    let mut provider = None;
    let otel = if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        let sdk = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(opentelemetry_sdk::Resource::builder().build())
            .build();
        let tracer = sdk.tracer("switchboard");
        opentelemetry::global::set_tracer_provider(sdk.clone());
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        provider = Some(sdk);
        ENABLED.store(true, Ordering::Relaxed);
        Some(
            // Only our own spans, down to debug (the message spans). A bare
            // DEBUG level would switch on every dependency's debug callsite
            // and cost CPU on each frame even with 1 % sampling. The `conn`
            // span stays out: it is entered on every poll of a connection
            // task, and the layer's per-enter work showed up at 6 % of a
            // node's CPU; `connection_ended` exports it in one go instead.
            // No busy/idle timing: it hooks every enter and exit of the
            // connection span, i.e. every poll of every connection task.
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                    meta.target().starts_with("switchboard")
                        && *meta.level() <= tracing::Level::DEBUG
                        && !(meta.is_span() && meta.name() == "conn")
                })),
        )
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Telemetry { provider })
}

/// Make `span` a child of a W3C `traceparent`, if one is given and valid.
pub fn set_remote_parent(span: &Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier = HashMap::from([("traceparent".to_owned(), tp.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// The W3C `traceparent` of `span`, to carry to other nodes.
pub fn traceparent(span: &Span) -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Export the lifecycle span of a connection that has just closed: from
/// `opened` until now, with how it ended.
pub fn connection_ended(
    opened: std::time::SystemTime,
    conn: &str,
    user: &str,
    node: &str,
    code: u16,
    reason: &str,
) {
    use opentelemetry::trace::{Span as _, SpanKind, Tracer as _};
    use opentelemetry::KeyValue;
    if !enabled() {
        return;
    }
    let tracer = opentelemetry::global::tracer("switchboard");
    let mut span = tracer
        .span_builder("conn")
        .with_kind(SpanKind::Server)
        .with_start_time(opened)
        .with_attributes([
            KeyValue::new("conn", conn.to_owned()),
            KeyValue::new("user", user.to_owned()),
            KeyValue::new("node", node.to_owned()),
            KeyValue::new("close_code", i64::from(code)),
            KeyValue::new("close_reason", reason.to_owned()),
        ])
        .start(&tracer);
    span.end();
}

/// Whether a `traceparent` is sampled (flags `01`): unsampled messages get
/// no delivery span at all.
pub fn sampled(traceparent: &str) -> bool {
    traceparent.ends_with("-01")
}

/// The span of fanning one message out on this node; `recipients` is
/// recorded after the dispatch.
pub fn deliver_span(channel: &str, node: &str, bytes: usize, traceparent: Option<&str>) -> Span {
    match traceparent {
        Some(tp) if enabled() && sampled(tp) => {
            let span = tracing::debug_span!(
                "deliver",
                otel.kind = "consumer",
                channel,
                node,
                bytes,
                recipients = tracing::field::Empty
            );
            set_remote_parent(&span, Some(tp));
            span
        }
        _ => Span::none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_flag_is_read_from_the_traceparent() {
        assert!(sampled(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!sampled(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        // Tracing is off in unit tests: no span, whatever the parent says.
        assert!(deliver_span(
            "c",
            "n",
            1,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        )
        .is_none());
    }
}
