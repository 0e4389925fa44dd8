//! TLS is terminated in front of the nodes (ingress / load balancer), not
//! in them. This test puts a real nginx, configured like the ingress in
//! docs/security.md, in front of a node and speaks `wss://` through it with
//! a real TLS client (Python `websockets`, verifying the test certificate).

use std::process::{Child, Command, Stdio};

use crate::support::tools::{available, present};
use crate::support::{free_port, temp_dir, wait_listening, TestNode};

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_a_tls_terminating_proxy() {
    let have = available("nginx", &["-v"]) && available("python3", &["-c", "import websockets"]);
    if !present(have, "nginx and python3 with `websockets`") {
        return;
    }
    let node = TestNode::memory(|_| {}).await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let dir = temp_dir("sb-nginx");
    let tls_port = free_port();
    let conf = format!(
        r#"daemon off;
pid {dir}/nginx.pid;
error_log stderr error;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{tls_port} ssl;
    ssl_certificate {fixtures}/tls-cert.pem;
    ssl_certificate_key {fixtures}/tls-key.pem;
    location / {{
      proxy_pass http://127.0.0.1:{node_port};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_read_timeout 3600s;
    }}
  }}
}}
"#,
        dir = dir.display(),
        node_port = node.port,
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let _nginx = Nginx(
        Command::new("nginx")
            .args([
                "-c",
                conf_path.to_str().unwrap(),
                "-p",
                dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    wait_listening(tls_port).await;

    // A wss client that trusts only the test certificate: subscribe, publish, receive.
    let script = r#"
import asyncio, json, ssl, sys
import websockets
async def main(url, ca):
    ctx = ssl.create_default_context(cafile=ca)
    async with websockets.connect(url, ssl=ctx) as ws:
        welcome = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "subscribe", "id": 1, "channel": "secure"}))
        assert json.loads(await ws.recv())["ok"] is True
        await ws.send(json.dumps({"type": "publish", "id": 2, "channel": "secure", "data": "over tls"}))
        frames = [json.loads(await ws.recv()) for _ in range(2)]
        message = next(f for f in frames if f["type"] == "message")
        print(welcome["user"], message["data"])
asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;
    let url = format!("wss://localhost:{tls_port}/ws?user=tls-user");
    let ca = format!("{fixtures}/tls-cert.pem");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", script, &url, &ca])
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "tls-user over tls"
    );

    // A client that does not trust the certificate is refused by TLS itself.
    let untrusting = r#"
import asyncio, sys, websockets
async def main(url):
    async with websockets.connect(url) as ws:
        await ws.recv()
asyncio.run(main(sys.argv[1]))
"#;
    let url = format!("wss://localhost:{tls_port}/ws?user=x");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", untrusting, &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CERTIFICATE_VERIFY_FAILED"));
}
