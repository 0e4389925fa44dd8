//! TLS to Redis (`rediss://`): nodes reach a `redis-server` that listens
//! only on a TLS port and demands client certificates, with a CA and
//! certificates generated here by `openssl`; a node that does not trust
//! Redis's certificate, or has no client certificate, never becomes ready
//! and refuses publishes with `broker_unavailable`. A `rediss+sentinel://`
//! URL reaches the TLS master its Sentinel names, and a `rediss+cluster://`
//! URL the masters of a TLS-only Redis Cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use switchboard::config::{RedisTls, Settings};

use crate::support::redis_process::RedisProcess;
use crate::support::tools::{available, present};
use crate::support::{eventually_async, free_port, temp_dir, TestNode};

/// `openssl` with these arguments in `dir`; panics if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA (`NAME-ca.crt`/`.key`) and, signed by it, a certificate for
/// `NAME-LEAF.crt`/`.key` for each leaf, valid for 127.0.0.1.
fn pki(dir: &Path, name: &str, leaves: &[&str]) {
    let ca = format!("{name}-ca");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    for leaf in leaves {
        let leaf = format!("{name}-{leaf}");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={leaf}"),
                "-keyout",
                &format!("{leaf}.key"),
                "-out",
                &format!("{leaf}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                &format!("{leaf}.crt"),
            ],
        );
    }
}

/// `redis-server` on a TLS port only (no plain port), requiring client
/// certificates from the `test` CA.
async fn tls_redis(dir: &Path) -> RedisProcess {
    let port = free_port();
    let file = |f: &str| dir.join(f).display().to_string();
    RedisProcess::start(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &file("test-redis.crt"),
            "--tls-key-file",
            &file("test-redis.key"),
            "--tls-ca-cert-file",
            &file("test-ca.crt"),
            "--tls-auth-clients",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    )
    .await
}

fn read(dir: &Path, f: &str) -> Vec<u8> {
    std::fs::read(dir.join(f)).unwrap()
}

/// The `test` CA with certificates for Redis and a node, in the folder
/// `name`; Redis on a TLS port only; the node's certificates. None where
/// openssl or redis-server is missing outside CI.
async fn tls_setup(name: &str) -> Option<(PathBuf, RedisProcess, RedisTls)> {
    let have = available("openssl", &["version"]) && available("redis-server", &["--version"]);
    if !present(have, "openssl and redis-server") {
        return None;
    }
    let dir = temp_dir(name);
    pki(&dir, "test", &["redis", "node"]);
    let redis = tls_redis(&dir).await;
    let trusted = RedisTls {
        ca: Some(read(&dir, "test-ca.crt")),
        client: Some((read(&dir, "test-node.crt"), read(&dir, "test-node.key"))),
    };
    Some((dir, redis, trusted))
}

/// Settings of a node named `id` on `url` with the certificates `tls`.
fn settings(url: String, id: &str, tls: RedisTls) -> Settings {
    let mut s = Settings::for_tests();
    s.redis_url = Some(url);
    s.redis_tls = tls;
    s.node_id = id.into();
    s.redis_timeout = std::time::Duration::from_millis(500);
    s
}

async fn node(redis: &RedisProcess, id: &str, tls: RedisTls) -> TestNode {
    TestNode::start(settings(
        format!("rediss://127.0.0.1:{}", redis.port),
        id,
        tls,
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_to_redis_over_tls_with_a_custom_ca_and_client_certificates() {
    let Some((dir, redis, trusted)) = tls_setup("sb-redis-tls").await else {
        return;
    };
    pki(&dir, "other", &["node"]);

    // Two nodes over TLS: a message crosses from one to the other.
    let a = node(&redis, "tls-a", trusted.clone()).await;
    let b = node(&redis, "tls-b", trusted.clone()).await;
    a.wait_ready(true).await;
    b.wait_ready(true).await;
    let mut ann = a.connect("ann").await;
    ann.subscribe("secure").await;
    let mut bob = b.connect("bob").await;
    let reply = bob.publish("secure", json!({"over": "tls"})).await;
    assert_eq!(reply["offset"], 1);
    let got = ann.expect("message").await;
    assert_eq!(got["data"], json!({"over": "tls"}));
    assert_eq!(got["from"], "bob");

    // Not trusting Redis's certificate (another CA), or no client
    // certificate: the node never gets a connection. Shown against a
    // marker: a good node started after them is ready while they are not.
    let wrong_ca = node(
        &redis,
        "tls-wrong-ca",
        RedisTls {
            ca: Some(read(&dir, "other-ca.crt")),
            client: trusted.client.clone(),
        },
    )
    .await;
    let no_cert = node(
        &redis,
        "tls-no-cert",
        RedisTls {
            ca: trusted.ca.clone(),
            client: None,
        },
    )
    .await;
    let wrong_cert = node(
        &redis,
        "tls-wrong-cert",
        RedisTls {
            ca: trusted.ca.clone(),
            client: Some((read(&dir, "other-node.crt"), read(&dir, "other-node.key"))),
        },
    )
    .await;
    let marker = node(&redis, "tls-marker", trusted).await;
    marker.wait_ready(true).await;
    for refused in [&wrong_ca, &no_cert, &wrong_cert] {
        let (status, _) = refused.http_get("/readyz").await;
        assert_eq!(status, 503, "{}", refused.gateway.node_id());
        let mut c = refused.connect("eve").await;
        let r = c
            .request(json!({"type": "publish", "channel": "secure", "data": 1}))
            .await;
        assert_eq!(r["error"]["code"], "broker_unavailable", "{r}");
    }
    // Nothing they were asked to publish reached the subscriber: the next
    // message ann gets is the marker's.
    let mut m = marker.connect("marker").await;
    m.publish("secure", json!("marker")).await;
    assert_eq!(ann.expect("message").await["data"], "marker");
}

/// `rediss+sentinel://`: the node asks a Sentinel (plain TCP) where the
/// master is, then reaches that master over TLS with the same CA and
/// client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_url_reaches_a_tls_master() {
    let Some((dir, redis, tls)) = tls_setup("sb-redis-tls-sentinel").await else {
        return;
    };
    // The Sentinel speaks TLS to the master it watches (tls-replication),
    // with Redis's own certificate as its client certificate.
    let file = |f: &str| dir.join(f).display().to_string();
    let tls_to_master = format!(
        "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-replication yes\n",
        file("test-redis.crt"),
        file("test-redis.key"),
        file("test-ca.crt"),
    );
    let sentinel = RedisProcess::sentinel(&dir, "tlsmaster", redis.port, 1, &tls_to_master).await;

    let url = format!("rediss+sentinel://127.0.0.1:{}/tlsmaster", sentinel.port);
    let mut s = settings(url, "tls-sentinel", tls);
    // No replica here: acknowledge without waiting for one.
    s.redis_wait_replicas = 0;
    let node = TestNode::start(s).await;
    node.wait_ready(true).await;
    let mut ann = node.connect("ann").await;
    ann.subscribe("via-sentinel").await;
    assert_eq!(ann.publish("via-sentinel", json!(1)).await["offset"], 1);
    assert_eq!(ann.expect("message").await["data"], 1);
}

/// `rediss+cluster://`: a Redis Cluster of three masters that speak only
/// TLS, among themselves too (`tls-cluster`); the node reads the slot map
/// from the seed and reaches every master over TLS with the same CA and
/// client certificate. Channels on every master deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_url_reaches_tls_masters() {
    let Some((dir, seed, tls)) = tls_setup("sb-redis-tls-cluster").await else {
        return;
    };
    drop(seed);
    let file = |f: &str| dir.join(f).display().to_string();
    let tls_args = [
        "--tls-cert-file".to_owned(),
        file("test-redis.crt"),
        "--tls-key-file".to_owned(),
        file("test-redis.key"),
        "--tls-ca-cert-file".to_owned(),
        file("test-ca.crt"),
    ];
    let mut masters = Vec::new();
    for _ in 0..3 {
        let (port, bus) = (free_port(), free_port());
        let mut args: Vec<String> = [
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
            "--tls-cluster",
            "yes",
            "--tls-auth-clients",
            "yes",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(["--tls-port".into(), port.to_string()]);
        args.extend(["--cluster-port".into(), bus.to_string()]);
        args.extend(["--cluster-config-file".into(), format!("nodes-{port}.conf")]);
        args.extend(tls_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        masters.push(RedisProcess::start(port, &args).await);
    }
    // redis-cli over TLS, with Redis's certificate as its own.
    let cli = |args: &[&str]| {
        let mut all = vec![
            "--tls",
            "--cacert",
            &tls_args[5],
            "--cert",
            &tls_args[1],
            "--key",
            &tls_args[3],
        ];
        all.extend_from_slice(args);
        Command::new("redis-cli")
            .args(&all)
            .stderr(Stdio::null())
            .output()
            .expect("run redis-cli")
    };
    let addresses: Vec<String> = masters
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.port))
        .collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addresses.iter().map(String::as_str));
    create.push("--cluster-yes");
    assert!(cli(&create).status.success(), "redis-cli --cluster create");
    for m in &masters {
        let port = m.port.to_string();
        eventually_async("the TLS cluster is ok", || async {
            let info = cli(&["-p", &port, "CLUSTER", "INFO"]);
            String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
        })
        .await;
    }

    let url = format!("rediss+cluster://{}", addresses[0]);
    let mut s = settings(url, "tls-cluster", tls);
    s.redis_wait_replicas = 0;
    let node = TestNode::start(s).await;
    node.wait_ready(true).await;
    let mut ann = node.connect("ann").await;
    // Twelve channels: with 3 masters, every master serves some.
    for i in 0..12 {
        let channel = format!("sharded{i}");
        ann.subscribe(&channel).await;
        assert_eq!(ann.publish(&channel, json!(i)).await["offset"], 1);
        let got = ann.expect("message").await;
        assert_eq!(
            (&got["channel"], &got["data"]),
            (&json!(channel), &json!(i))
        );
    }
}
