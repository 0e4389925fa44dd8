//! A node run as the real `switchboard` binary, for tests that need a
//! process of its own: signals, exit codes, its memory.

use std::process::{Child, Command, Stdio};

use super::{eventually, eventually_async, free_port};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A node process, killed on drop.
pub struct NodeProcess {
    pub child: Child,
    pub port: u16,
}

impl NodeProcess {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("RUST_LOG", "info")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !args.contains(&"--listen") && !env.iter().any(|(k, _)| *k == "SWITCHBOARD_LISTEN") {
            cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        NodeProcess {
            child: cmd.spawn().expect("spawn switchboard"),
            port,
        }
    }

    pub async fn wait_listening(&self) {
        wait_listening(self.port).await;
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        eventually("the node to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        })
        .await;
        status.expect("exited")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until something accepts TCP connections on `port`.
pub async fn wait_listening(port: u16) {
    eventually_async("the node to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
}
