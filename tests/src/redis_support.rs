//! Real `redis-server`s for the tests and benches, started on free
//! 127.0.0.1 ports from the binaries on PATH and killed by their own
//! handles: one server ([`RedisServer`]) or a three-node Redis Cluster
//! ([`RedisCluster`]).

use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A `redis-server` this process started. Dropping it kills it.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` on a free port.
    ///
    /// Returns `None` with a notice on stderr when `redis-server` is not on
    /// PATH, unless `CI=true`: then it panics, so CI cannot skip silently.
    pub fn start() -> Option<Self> {
        let [port] = free_ports();
        let mut server = Self { child: None, port };
        if server.spawn() {
            Some(server)
        } else {
            skip("redis-server")
        }
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (only the process this handle started) and waits
    /// for it to exit.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            kill(child);
        }
    }

    /// Starts the server again on the same port (with empty data).
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server could not be restarted");
    }

    /// Spawns the server and waits until it accepts connections; `false`
    /// when the binary is missing.
    fn spawn(&mut self) -> bool {
        self.child = spawn_server(self.port, &[]);
        self.child.is_some()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A three-node Redis Cluster (no replicas) this process started, with its
/// files in a temporary directory. Dropping it kills the three servers
/// (only those) and removes the directory.
#[derive(Debug)]
pub struct RedisCluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts three `redis-server --cluster-enabled yes` on free ports,
    /// joins them with `redis-cli --cluster create` and waits (at most
    /// 10 s) until every node reports `cluster_state:ok`.
    ///
    /// Returns `None` with a notice on stderr when `redis-server` or
    /// `redis-cli` is not on PATH, unless `CI=true`: then it panics.
    pub fn start() -> Option<Self> {
        if !on_path("redis-cli") {
            return skip("redis-cli");
        }
        // Client ports and cluster-bus ports: the default bus port
        // (port + 10000) may not exist for a high ephemeral port.
        let ports: [u16; 6] = free_ports();
        let (ports, bus) = ports.split_at(3);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-redis-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut cluster = Self {
            children: Vec::new(),
            ports: ports.to_vec(),
            dir,
        };
        for (&port, &bus) in ports.iter().zip(bus) {
            let dir = cluster.dir.to_string_lossy().into_owned();
            let config = format!("{dir}/nodes-{port}.conf");
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &config,
                "--cluster-port",
                &bus.to_string(),
                "--dir",
                &dir,
            ];
            match spawn_server(port, &args) {
                Some(child) => cluster.children.push(child),
                None => return skip("redis-server"),
            }
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let create = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            create.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&create.stdout),
            String::from_utf8_lossy(&create.stderr)
        );
        cluster.wait_until_ok();
        Some(cluster)
    }

    /// The nodes' URLs, `redis://127.0.0.1:port` each.
    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The nodes' client ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Runs `redis-cli -p port ARGS…` against one node (no redirections)
    /// and returns its trimmed output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// How many keys each node holds (`DBSIZE`), in the order of
    /// [`ports`](Self::ports).
    pub fn key_counts(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|&p| {
                self.cli(p, &["DBSIZE"])
                    .parse()
                    .expect("DBSIZE is a number")
            })
            .collect()
    }

    /// The keys of every node (`KEYS *`: test data sets only), in the
    /// order of [`ports`](Self::ports).
    pub fn keys(&self) -> Vec<Vec<String>> {
        self.ports
            .iter()
            .map(|&p| {
                let out = self.cli(p, &["--no-raw", "KEYS", "*"]);
                out.lines()
                    .filter_map(|l| {
                        let quoted = l.split_once(") ")?.1;
                        Some(quoted.trim_matches('"').to_owned())
                    })
                    .collect()
            })
            .collect()
    }

    fn wait_until_ok(&self) {
        for _ in 0..200 {
            let ok = self.ports.iter().all(|&p| {
                self.cli(p, &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the Redis Cluster did not reach cluster_state:ok within 10 s");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.drain(..) {
            kill(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `N` distinct free ports on 127.0.0.1 (all bound at once, then freed).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local_addr").port())
}

/// Spawns `redis-server` on `port` (no persistence) and waits until it
/// accepts connections; `None` when the binary is missing.
fn spawn_server(port: u16, extra: &[&str]) -> Option<Child> {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..500 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(child);
    panic!("redis-server did not listen on port {port} within 5 s");
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn on_path(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The skip rule: a notice and `None`, or a panic when `CI=true`.
fn skip<T>(binary: &str) -> Option<T> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "{binary} is not on PATH and CI=true: install it (.ci/run does)"
    );
    eprintln!("NOTICE: {binary} is not on PATH; skipping this Redis test");
    None
}
