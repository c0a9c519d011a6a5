//! Redis servers of a test's own: one (to stop and restart at will), or a local Redis
//! Cluster of three masters with a replica each (Redis 7's `--cluster-enabled`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{closed_port, services_required};

/// How long a Redis (or a cluster) has to come up.
pub const REDIS_START_LIMIT: Duration = Duration::from_secs(30);

/// `redis-cli -p port args...`: its output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Redis server of the test's own, on a port of its own.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if services_required() => panic!("redis-server cannot be started: {e}"),
            Err(e) => {
                eprintln!(
                    "skipping: redis-server cannot be started ({e}); CI=true makes this a failure"
                );
                return None;
            }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            port,
            child: Some(child),
        })
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A local Redis Cluster: six `redis-server --cluster-enabled yes` processes on free ports,
/// three masters and three replicas, made by `redis-cli --cluster create`.
pub struct OwnCluster {
    pub nodes: Vec<OwnRedis>,
    _dir: tempfile::TempDir,
}

impl OwnCluster {
    /// Starts the cluster and waits for it to be ready; `None` (a skip) when redis-server
    /// is missing and services are not required.
    pub fn start() -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            match start_cluster_node(closed_port(), dir.path()) {
                Ok(node) => nodes.push(node),
                Err(e) if services_required() => panic!("redis-server cannot be started: {e}"),
                Err(e) => {
                    eprintln!("skipping: redis-server cannot be started ({e})");
                    return None;
                }
            }
        }
        let deadline = Instant::now() + REDIS_START_LIMIT;
        for node in &nodes {
            while std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err() {
                assert!(Instant::now() < deadline, "a cluster node did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_ready();
        Some(cluster)
    }

    /// Waits until every node says the cluster is ok.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + REDIS_START_LIMIT;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            while !redis_cli(node.port, &["cluster", "info"]).contains("cluster_state:ok") {
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not become ready"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Kills node `i` and starts it again on its port with its cluster file: a master's
    /// replica takes over meanwhile, and the node rejoins as a replica.
    pub fn restart_node(&mut self, i: usize) {
        let port = self.nodes[i].port;
        self.nodes[i].stop();
        self.nodes[i] = start_cluster_node(port, self._dir.path()).expect("the node restarts");
        let deadline = Instant::now() + REDIS_START_LIMIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the node did not listen again");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A node's URL (any node: the client finds the others).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Runs a command on every master: their outputs.
    pub fn on_masters(&self, args: &[&str]) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter(|n| redis_cli(n.port, &["role"]).starts_with("master"))
            .map(|n| redis_cli(n.port, args))
            .collect()
    }
}

/// One cluster node on `port`, its files in `dir`.
fn start_cluster_node(port: u16, dir: &std::path::Path) -> std::io::Result<OwnRedis> {
    let conf = dir.join(format!("nodes-{port}.conf"));
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            conf.to_str().unwrap(),
            "--cluster-node-timeout",
            "2000",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(OwnRedis {
        port,
        child: Some(child),
    })
}
