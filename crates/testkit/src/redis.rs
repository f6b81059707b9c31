//! [`RedisServer`]: a redis-server of the test's own, on a free loopback port, for tests of
//! whatever keeps state in Redis (the rate limiter's and the cache's stores, a fleet's stack).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A redis-server of its own, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// The port it listens on.
    pub port: u16,
    extra: Vec<&'static str>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one with `extra` arguments (`["--requirepass", "secret"]`), and waits until it
    /// answers.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed, or does not answer within 10 s.
    pub fn start(extra: &[&'static str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self {
            port,
            extra: extra.to_vec(),
            child: None,
        };
        server.restart();
        server
    }

    /// Starts it (again, on the same port) and waits until it answers.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn restart(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install it (apt-get install redis-server)")
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !answers(self.port) {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server is not answering on {port}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops it now (a Redis that goes away).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it answering without closing its connections (SIGSTOP): a Redis that hangs.
    ///
    /// # Panics
    ///
    /// When it does not run, or `kill` fails.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [paused](Self::pause) server answer again (SIGCONT).
    ///
    /// # Panics
    ///
    /// As [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("redis-server is not running").to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether something answers PING on `port` (a password-protected server answers NOAUTH).
fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reply = [0; 16];
    stream.write_all(b"PING\r\n").is_ok()
        && stream
            .read(&mut reply)
            .is_ok_and(|n| reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"))
}
