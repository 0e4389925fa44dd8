//! `redis-server` processes with arguments of the test's own — replicas,
//! TLS-only servers, Sentinels — where the fixtures' `RedisServer` (a plain
//! server on one port) does not fit. Killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::{free_port, temp_dir, wait_listening};

/// A `redis-server` child listening on `port`; killed on drop.
pub struct RedisProcess {
    child: Child,
    pub port: u16,
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisProcess {
    /// `redis-server ARGS`, once it listens on `port` (which the
    /// arguments must name).
    pub async fn start(port: u16, args: &[&str]) -> RedisProcess {
        // Its own working directory: a replica saves the master's snapshot
        // there, and a server loads a `dump.rdb` it finds there at start.
        let dir = temp_dir(&format!("sb-redis-{port}"));
        let child = Command::new("redis-server")
            .current_dir(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_listening(port).await;
        RedisProcess { child, port }
    }

    /// A replica of the server on `master_port`, on a free port, without
    /// persistence. It may not be in sync yet.
    pub async fn replica(master_port: u16) -> RedisProcess {
        let port = free_port();
        let (port_arg, master) = (port.to_string(), master_port.to_string());
        let args = [
            "--port",
            &port_arg,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &master,
        ];
        RedisProcess::start(port, &args).await
    }

    /// A Sentinel on a free port (plain TCP), its config file in `dir`,
    /// watching `master` at 127.0.0.1:`master_port` with `quorum`, plus
    /// the config lines `extra`.
    pub async fn sentinel(
        dir: &Path,
        master: &str,
        master_port: u16,
        quorum: u32,
        extra: &str,
    ) -> RedisProcess {
        let port = free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {master} 127.0.0.1 {master_port} {quorum}\n{extra}",
                dir = dir.display()
            ),
        )
        .expect("write the Sentinel's config");
        RedisProcess::start(port, &[conf.to_str().unwrap(), "--sentinel"]).await
    }
}
