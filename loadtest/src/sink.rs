//! `otlp-sink`: a stand-in trace collector for overhead runs and the local
//! deploy test. It accepts OTLP/HTTP export requests, answers 200, and
//! counts requests, bytes and spans — per exporting pod (the
//! `k8s.pod.name` resource attribute, else `service.name`) — so the nodes
//! pay the real cost of exporting without a collector competing for the
//! benchmark machine's CPU. The receiver is the one the tests use
//! (`switchboard_fixtures::OtlpReceiver`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_fixtures::OtlpReceiver;
use tokio::signal::unix::{signal, SignalKind};

/// Accept exports on `port` until SIGINT or SIGTERM, printing totals every
/// 5 s and once more, with the spans per exporter, when stopped.
pub async fn run(port: u16) -> anyhow::Result<()> {
    let spans: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let sink = {
        let spans = spans.clone();
        OtlpReceiver::start(port, move |body| {
            let mut spans = spans.lock().unwrap();
            for (exporter, n) in count_spans(body) {
                *spans.entry(exporter).or_default() += n;
            }
        })
        .await?
    };
    eprintln!("otlp-sink listening on {}", sink.endpoint());
    let total = || spans.lock().unwrap().values().sum::<u64>();
    let mut term = signal(SignalKind::terminate())?;
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {
                eprintln!("otlp-sink: {} requests, {} spans, {} bytes", sink.requests(), total(), sink.bytes());
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    let total = total();
    let by: Vec<String> = (spans.lock().unwrap().iter())
        .map(|(e, n)| format!("{e}={n}"))
        .collect();
    eprintln!(
        "otlp-sink: total {} requests, {total} spans, {} bytes; spans by exporter: {}",
        sink.requests(),
        sink.bytes(),
        by.join(" ")
    );
    Ok(())
}

/// Spans in an `ExportTraceServiceRequest` (protobuf), per exporter:
/// request.resource_spans(1) → { resource(1).attributes(1), scope_spans(2).spans(2) }.
/// A minimal reader of the wire format: no schema crate needed to count.
pub fn count_spans(body: &[u8]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for_each(body, |field, resource_spans| {
        if field != 1 {
            return;
        }
        let (mut pod, mut service, mut spans) = (None, None, 0u64);
        for_each(resource_spans, |field, value| match field {
            1 => for_each(value, |field, kv| {
                if field != 1 {
                    return;
                }
                let (mut key, mut text) = (None, None);
                for_each(kv, |field, v| match field {
                    1 => key = Some(String::from_utf8_lossy(v).into_owned()),
                    2 => for_each(v, |field, s| {
                        if field == 1 {
                            text = Some(String::from_utf8_lossy(s).into_owned());
                        }
                    }),
                    _ => {}
                });
                match key.as_deref() {
                    Some("k8s.pod.name") => pod = text,
                    Some("service.name") => service = text,
                    _ => {}
                }
            }),
            2 => for_each(value, |field, _| spans += u64::from(field == 2)),
            _ => {}
        });
        let exporter = pod.or(service).unwrap_or_else(|| "unknown".into());
        out.push((exporter, spans));
    });
    out
}

/// Calls `f(field number, bytes)` for every length-delimited field of a
/// message; skips the others, and stops at anything malformed.
fn for_each(mut b: &[u8], mut f: impl FnMut(u64, &[u8])) {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while let Some(key) = varint(&mut b) {
        let skip = match key & 7 {
            0 => match varint(&mut b) {
                Some(_) => 0,
                None => return,
            },
            1 => 8,
            2 => {
                let Some(len) = varint(&mut b).and_then(|l| usize::try_from(l).ok()) else {
                    return;
                };
                let Some(value) = b.get(..len) else { return };
                f(key >> 3, value);
                len
            }
            5 => 4,
            _ => return,
        };
        let Some(rest) = b.get(skip..) else { return };
        b = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::count_spans;

    fn field(n: u8, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![n << 3 | 2, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn counts_spans_per_pod() {
        let attr = |k: &str, v: &str| {
            field(
                1,
                &[field(1, k.as_bytes()), field(2, &field(1, v.as_bytes()))].concat(),
            )
        };
        // A span: trace id (bytes), a fixed64 start time, a varint kind.
        let span = [
            field(1, &[7; 16]),
            vec![7 << 3 | 1],
            vec![0; 8],
            vec![6 << 3, 2],
        ]
        .concat();
        let scope = [field(1, b""), field(2, &span), field(2, &span)].concat();
        let resource = [
            attr("service.name", "switchboard"),
            attr("k8s.pod.name", "sb-1"),
        ]
        .concat();
        let rs = |resource: &[u8]| field(1, &[field(1, resource), field(2, &scope)].concat());
        let body = [rs(&resource), rs(&attr("service.name", "other"))].concat();
        assert_eq!(
            count_spans(&body),
            vec![("sb-1".to_owned(), 2), ("other".to_owned(), 2)]
        );
        assert!(count_spans(&[0xff]).is_empty());
    }
}
