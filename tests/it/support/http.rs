//! HTTP calls to a node's operational endpoints and server API, with
//! reqwest (already built for the OTLP exporter).

use serde_json::Value;
use switchboard_fixtures::{eventually_async, WAIT};

use super::API_KEY;

fn client() -> reqwest::Client {
    // One per call: each test runs its own runtime, and a pooled
    // connection must not outlive the runtime that opened it.
    reqwest::Client::builder()
        .timeout(WAIT)
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client")
}

/// Send a request; its status and body, or the transport error.
pub async fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> reqwest::Result<(u16, String)> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
    let mut request = client()
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// Send a request; its status and body.
pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    try_request(port, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

pub async fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path, &[], "").await
}

/// Call the server API with the test key; the body is JSON both ways.
pub async fn api(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let auth = format!("apikey {API_KEY}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = body.map(Value::to_string).unwrap_or_default();
    let (status, text) = request(port, method, path, &headers, &body).await;
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text:?}"));
    (status, value)
}

/// Wait until `/readyz` on `port` answers 200 (or 503 if `ready` is false);
/// a node that does not listen yet is not ready.
pub async fn wait_ready(port: u16, ready: bool) {
    let want = if ready { 200 } else { 503 };
    let what = format!("/readyz on port {port} to answer {want}");
    eventually_async(&what, || async {
        try_request(port, "GET", "/readyz", &[], "")
            .await
            .is_ok_and(|(status, _)| status == want)
    })
    .await;
}
