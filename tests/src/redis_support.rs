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
        on_free_ports("redis-server", || {
            let [port] = free_ports();
            spawn_server(port, &[]).map(|child| Self {
                child: Some(child),
                port,
            })
        })
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
        match spawn_server(self.port, &[]) {
            Spawned::Up(child) => self.child = Some(child),
            Spawned::Taken => panic!("port {} was taken while redis-server was down", self.port),
            Spawned::Missing => panic!("redis-server could not be restarted"),
        }
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
        let cluster = on_free_ports("a Redis Cluster", Self::spawn_nodes)?;
        let ports = &cluster.ports;
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

    /// Three cluster-enabled servers on free ports, not yet joined;
    /// [`Spawned::Taken`] (and none left running) when a port was taken
    /// before its server could bind it.
    fn spawn_nodes() -> Spawned<Self> {
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
        // Dropped on an early return: kills what started, removes `dir`.
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
                Spawned::Up(child) => cluster.children.push(child),
                Spawned::Taken => return Spawned::Taken,
                Spawned::Missing => return Spawned::Missing,
            }
        }
        Spawned::Up(cluster)
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

/// How many sets of free ports a server or cluster tries.
const ATTEMPTS: usize = 5;

/// What came of starting a server.
enum Spawned<T> {
    /// Running, and answering on its port.
    Up(T),
    /// The port was taken between choosing it and binding it (another
    /// test's server or connection got it): try other ports.
    Taken,
    /// `redis-server` is not on PATH.
    Missing,
}

impl<T> Spawned<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Spawned<U> {
        match self {
            Self::Up(up) => Spawned::Up(f(up)),
            Self::Taken => Spawned::Taken,
            Self::Missing => Spawned::Missing,
        }
    }
}

/// Runs `spawn` (which picks its own free ports) until nothing took its
/// ports first, at most [`ATTEMPTS`] times; `None`, with a notice, when
/// `redis-server` is missing (see [`skip`]).
fn on_free_ports<T>(what: &str, mut spawn: impl FnMut() -> Spawned<T>) -> Option<T> {
    for _ in 0..ATTEMPTS {
        match spawn() {
            Spawned::Up(up) => return Some(up),
            Spawned::Taken => {}
            Spawned::Missing => return skip("redis-server"),
        }
    }
    panic!("no free ports for {what} in {ATTEMPTS} attempts");
}

/// Spawns `redis-server` on `port` (no persistence) and waits until it
/// answers there: the server that answers must be this one (its
/// `process_id`), not another test's that took the port in the meantime.
fn spawn_server(port: u16, extra: &[&str]) -> Spawned<Child> {
    let Ok(mut child) = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return Spawned::Missing;
    };
    for _ in 0..500 {
        if !matches!(child.try_wait(), Ok(None)) {
            // It exited: it could not bind the port.
            let _ = child.wait();
            return Spawned::Taken;
        }
        match server_pid(port) {
            Some(pid) if pid == child.id() => return Spawned::Up(child),
            Some(_) => {
                kill(child);
                return Spawned::Taken;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    kill(child);
    panic!("redis-server did not listen on port {port} within 5 s");
}

/// The `process_id` of the Redis server answering on `port`, if one does.
fn server_pid(port: u16) -> Option<u32> {
    use std::io::{Read, Write};

    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while reply.len() < 64 * 1024 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(at) = text.find("process_id:") {
            let rest = &text[at + "process_id:".len()..];
            if let Some(end) = rest.find("\r\n") {
                return rest[..end].trim().parse().ok();
            }
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A port another process holds is reported taken, never mistaken for
    /// the new server's, and a free one gives a server that answers.
    #[test]
    fn a_taken_port_is_reported_and_a_free_one_used() {
        if !on_path("redis-server") {
            skip::<()>("redis-server");
            return;
        }
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        assert!(matches!(spawn_server(taken, &[]), Spawned::Taken));
        let mut server = RedisServer::start().unwrap();
        assert_eq!(
            server_pid(server.port),
            server.child.as_ref().map(Child::id)
        );
        server.kill();
    }
}
