//! A real `redis-server` for the tests and benches, started on a free
//! 127.0.0.1 port from the binary on PATH and killed by its own handle.

use std::{
    net::TcpStream,
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self { child: None, port };
        if server.spawn() {
            Some(server)
        } else {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "redis-server is not on PATH and CI=true: install it (.ci/run does)"
            );
            eprintln!("NOTICE: redis-server is not on PATH; skipping this Redis test");
            None
        }
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (only the process this handle started) and waits
    /// for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        for _ in 0..500 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server did not listen on port {} within 5 s",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
