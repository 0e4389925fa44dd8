//! Token authentication at the handshake, token expiry and `refresh`,
//! with HS256, RS256/ES256 PEM keys and a JWKS file (test keys in
//! tests/fixtures).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{Client, Ended, TestNode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use switchboard::config::{JwtKey, JwtSettings, Settings};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

const SECRET: &str = "test-secret-that-is-long-enough-0123456789";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, exp: u64) -> serde_json::Value {
    json!({"sub": sub, "exp": exp, "aud": "switchboard", "iss": "https://auth.example"})
}

fn hs256(claims: &serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn signed(alg: Algorithm, kid: Option<&str>, key_file: &str, claims: &serde_json::Value) -> String {
    let pem = std::fs::read(fixture(key_file)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

fn with_jwt(key: JwtKey) -> impl FnOnce(&mut Settings) {
    move |s| {
        s.jwt = Some(JwtSettings {
            key,
            audience: Some("switchboard".into()),
            issuer: Some("https://auth.example".into()),
        });
        s.allow_anonymous = false;
    }
}

/// A WebSocket handshake to `url` with an optional bearer token.
async fn handshake(url: &str, bearer: Option<&str>) -> Result<(), WsError> {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.map(drop)
}

/// Open a WebSocket with an optional bearer token and query; the HTTP status
/// of a refused handshake, or the client.
async fn open(node: &TestNode, query: &str, bearer: Option<&str>) -> Result<Client, u16> {
    let url = format!("ws://127.0.0.1:{}/ws{query}", node.port);
    match handshake(&url, bearer).await {
        Ok(_) => {}
        Err(WsError::Http(response)) => return Err(response.status().as_u16()),
        Err(e) => panic!("handshake error {e}"),
    }
    // Accepted: connect again through the harness client to get its helpers.
    Ok(Client::connect_request(&url, bearer).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_from_header_or_query_decide_the_user() {
    let node = TestNode::memory(with_jwt(JwtKey::HmacSecret(SECRET.into()))).await;
    let token = hs256(&claims("alice", now() + 600));
    let c = open(&node, "", Some(&token)).await.unwrap();
    assert_eq!(c.welcome["user"], "alice");
    let c = open(&node, &format!("?token={token}&user=mallory"), None)
        .await
        .unwrap();
    assert_eq!(c.welcome["user"], "alice", "?user= cannot override a token");

    // Refused before the upgrade: no token, bad signature, expired, wrong audience, garbage.
    assert_eq!(open(&node, "?user=alice", None).await.err(), Some(401));
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims("alice", now() + 600),
        &EncodingKey::from_secret(b"another-secret-another-secret-0123"),
    )
    .unwrap();
    assert_eq!(open(&node, "", Some(&forged)).await.err(), Some(401));
    assert_eq!(
        open(&node, "", Some(&hs256(&claims("alice", now() - 5))))
            .await
            .err(),
        Some(401)
    );
    let mut wrong_aud = claims("alice", now() + 600);
    wrong_aud["aud"] = json!("someone-else");
    assert_eq!(
        open(&node, "", Some(&hs256(&wrong_aud))).await.err(),
        Some(401)
    );
    assert_eq!(open(&node, "", Some("not.a.token")).await.err(), Some(401));
    let none_alg = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims("alice", now() + 600).to_string())
    );
    assert_eq!(open(&node, "", Some(&none_alg)).await.err(), Some(401));
}

fn b64(s: &str) -> String {
    use std::fmt::Write;
    // URL-safe base64 without padding, enough for a forged header.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let _ = write!(out, "{}", A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_es256_and_jwks_keys_verify() {
    let rsa = TestNode::memory(with_jwt(JwtKey::PublicKeyFile(fixture("rsa-public.pem")))).await;
    let token = signed(
        Algorithm::RS256,
        None,
        "rsa-private.pem",
        &claims("rita", now() + 600),
    );
    assert_eq!(
        open(&rsa, "", Some(&token)).await.unwrap().welcome["user"],
        "rita"
    );
    // An HS256 token signed with the public key as the secret is the classic confusion attack.
    let pem = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims("rita", now() + 600),
        &EncodingKey::from_secret(&pem),
    )
    .unwrap();
    assert_eq!(open(&rsa, "", Some(&confused)).await.err(), Some(401));

    let ec = TestNode::memory(with_jwt(JwtKey::PublicKeyFile(fixture("ec-public.pem")))).await;
    let token = signed(
        Algorithm::ES256,
        None,
        "ec-private.pem",
        &claims("eve", now() + 600),
    );
    assert_eq!(
        open(&ec, "", Some(&token)).await.unwrap().welcome["user"],
        "eve"
    );

    let jwks = TestNode::memory(with_jwt(JwtKey::JwksFile(fixture("jwks.json")))).await;
    let rs = signed(
        Algorithm::RS256,
        Some("rsa-1"),
        "rsa-private.pem",
        &claims("kim", now() + 600),
    );
    let es = signed(
        Algorithm::ES256,
        Some("ec-1"),
        "ec-private.pem",
        &claims("lee", now() + 600),
    );
    assert_eq!(
        open(&jwks, "", Some(&rs)).await.unwrap().welcome["user"],
        "kim"
    );
    assert_eq!(
        open(&jwks, "", Some(&es)).await.unwrap().welcome["user"],
        "lee"
    );
    let unknown_kid = signed(
        Algorithm::RS256,
        Some("rsa-9"),
        "rsa-private.pem",
        &claims("kim", now() + 600),
    );
    assert_eq!(open(&jwks, "", Some(&unknown_kid)).await.err(), Some(401));
    let no_kid = signed(
        Algorithm::RS256,
        None,
        "rsa-private.pem",
        &claims("kim", now() + 600),
    );
    assert_eq!(open(&jwks, "", Some(&no_kid)).await.err(), Some(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_access_is_opt_in_once_tokens_are_configured() {
    let strict = TestNode::memory(with_jwt(JwtKey::HmacSecret(SECRET.into()))).await;
    assert_eq!(open(&strict, "?user=anon", None).await.err(), Some(401));
    let mixed = TestNode::memory(|s| {
        with_jwt(JwtKey::HmacSecret(SECRET.into()))(s);
        s.allow_anonymous = true;
    })
    .await;
    assert_eq!(
        open(&mixed, "?user=guest", None).await.unwrap().welcome["user"],
        "guest"
    );
    // A token on a node without JWT keys is refused, not ignored.
    let plain = TestNode::memory(|_| {}).await;
    assert_eq!(
        open(&plain, "", Some(&hs256(&claims("x", now() + 60))))
            .await
            .err(),
        Some(401)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_closes_the_connection_unless_refreshed() {
    let node = TestNode::memory(with_jwt(JwtKey::HmacSecret(SECRET.into()))).await;
    let exp = now() + 2;
    let mut lapsing = open(&node, "", Some(&hs256(&claims("amy", exp))))
        .await
        .unwrap();
    let mut renewed = open(&node, "", Some(&hs256(&claims("ben", exp))))
        .await
        .unwrap();
    // Expires a second after the others: its close is the sign that ben's
    // first token has been expired for a second.
    let mut witness = open(&node, "", Some(&hs256(&claims("wit", exp + 1))))
        .await
        .unwrap();

    // A refresh must verify and be for the same user.
    let r = renewed
        .request(json!({"type": "refresh", "token": "garbage"}))
        .await;
    assert_eq!(r["error"]["code"], "bad_token", "{r}");
    let r = renewed
        .request(json!({"type": "refresh", "token": hs256(&claims("amy", now() + 600))}))
        .await;
    assert_eq!(r["error"]["code"], "bad_token", "{r}");
    renewed
        .ok(json!({"type": "refresh", "token": hs256(&claims("ben", now() + 600))}))
        .await;

    assert_eq!(lapsing.ended().await, Ended::Close(3006));
    assert_eq!(witness.ended().await, Ended::Close(3006));
    // Well past the first expiry, the refreshed connection still works.
    assert_eq!(
        renewed.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

/// A refresh to a token that runs out sooner moves the close with it: it
/// comes at the new expiry, not at the next heartbeat tick (25 s away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_to_a_shorter_token_closes_at_its_expiry() {
    let node = TestNode::memory(with_jwt(JwtKey::HmacSecret(SECRET.into()))).await;
    let mut shortened = open(&node, "", Some(&hs256(&claims("cat", now() + 600))))
        .await
        .unwrap();
    let exp = now() + 2;
    // Expires 3 s after the new token: still open when `shortened` closes,
    // unless that close waited for a heartbeat tick.
    let mut witness = open(&node, "", Some(&hs256(&claims("wit", exp + 3))))
        .await
        .unwrap();
    shortened
        .ok(json!({"type": "refresh", "token": hs256(&claims("cat", exp))}))
        .await;
    assert_eq!(shortened.ended().await, Ended::Close(3006));
    assert_eq!(
        witness.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

/// The status and parsed JSON body of a refused handshake.
async fn refused(node: &TestNode, query: &str, bearer: Option<&str>) -> (u16, serde_json::Value) {
    let url = format!("ws://127.0.0.1:{}/ws{query}", node.port);
    match handshake(&url, bearer).await {
        Ok(_) => panic!("the handshake was accepted"),
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let body = serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
            (response.status().as_u16(), body)
        }
        Err(e) => panic!("handshake error {e}"),
    }
}

/// Two different tokens (header and `?token=`) are refused, whichever is
/// valid; the same token twice is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_tokens_in_header_and_query_are_refused() {
    let node = TestNode::memory(with_jwt(JwtKey::HmacSecret(SECRET.into()))).await;
    let alice = hs256(&claims("alice", now() + 600));
    let bob = hs256(&claims("bob", now() + 600));
    for query_token in ["garbage", bob.as_str()] {
        let (status, body) = refused(&node, &format!("?token={query_token}"), Some(&alice)).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "ambiguous_credentials", "{body}");
    }
    let c = open(&node, &format!("?token={alice}"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(c.welcome["user"], "alice");
}

/// A token whose `nbf` is in the future is refused, beyond the documented
/// 5 s leeway for clock skew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_not_yet_valid_are_refused() {
    let node = TestNode::memory(with_jwt(JwtKey::HmacSecret(SECRET.into()))).await;
    let mut early = claims("alice", now() + 600);
    early["nbf"] = json!(now() + 120);
    let (status, body) = refused(&node, "", Some(&hs256(&early))).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "token_not_yet_valid", "{body}");
    let mut skewed = claims("alice", now() + 600);
    skewed["nbf"] = json!(now() + 2);
    assert!(open(&node, "", Some(&hs256(&skewed))).await.is_ok());
}

/// Refusals before the upgrade name a short documented code; the parser's
/// text (base64 errors, algorithm lists) stays in the node's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_answer_codes_not_internals() {
    let node = TestNode::memory(with_jwt(JwtKey::HmacSecret(SECRET.into()))).await;
    let expired = hs256(&claims("alice", now() - 10));
    let other_key = encode(
        &Header::new(Algorithm::HS256),
        &claims("alice", now() + 600),
        &EncodingKey::from_secret(b"another-secret-another-secret-0123"),
    )
    .unwrap();
    let cases = [
        ("", Some("not.a.token"), "invalid_token"),
        ("", Some("eyJhbGciOiJIUzI1NiJ9.e30.t"), "invalid_token"),
        ("", Some(other_key.as_str()), "invalid_token"),
        ("", Some(expired.as_str()), "expired_token"),
        ("?user=ann", None, "token_required"),
    ];
    for (query, bearer, code) in cases {
        let (status, body) = refused(&node, query, bearer).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some(code)),
            "{body}"
        );
        let text = body.to_string().to_lowercase();
        for leak in [
            "base64",
            "symbol",
            "algorithm",
            "invalidtoken",
            "json error",
        ] {
            assert!(!text.contains(leak), "{leak:?} leaked in {body}");
        }
    }
    let plain = TestNode::memory(|_| {}).await;
    let (status, body) = refused(&plain, "", Some("a.b.c")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("tokens_not_configured"))
    );
}
