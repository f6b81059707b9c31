//! [`RedisServer`]: a redis-server of the test's own, on a free loopback port, for tests of
//! whatever keeps state in Redis (the rate limiter's and the cache's stores, a fleet's stack).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod cluster;

pub use self::cluster::RedisCluster;

/// A redis-server of its own, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// The port it listens on.
    pub port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one with `extra` arguments (`["--requirepass", "secret"]`), and waits until it
    /// answers.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed, or does not answer within 10 s.
    pub fn start(extra: &[&str]) -> Self {
        let port = free_port();
        Self::start_on(port, extra.iter().map(|&arg| arg.to_owned()).collect())
    }

    /// As [`start`](Self::start), on `port`.
    pub(crate) fn start_on(port: u16, extra: Vec<String>) -> Self {
        let mut server = Self {
            port,
            extra,
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

    /// The keys matching `pattern` (`KEYS`), asked on its port over a plain socket, after
    /// `AUTH` when it was started with `--requirepass`.
    ///
    /// # Panics
    ///
    /// When it does not answer within a second, or answers something else than a list.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let command = |args: &[&str]| {
            let mut text = format!("*{}\r\n", args.len());
            for arg in args {
                text.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
            text
        };
        let password = self
            .extra
            .windows(2)
            .find(|pair| pair[0] == "--requirepass")
            .map(|pair| pair[1].as_str());
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("redis-server runs");
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut request = password.map_or_else(String::new, |p| command(&["AUTH", p]));
        request.push_str(&command(&["KEYS", pattern]));
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        let mut buffer = [0; 4096];
        loop {
            let n = stream.read(&mut buffer).expect("redis-server answers");
            assert!(n > 0, "redis-server closed the connection: {reply:?}");
            reply.push_str(&String::from_utf8_lossy(&buffer[..n]));
            let list = if password.is_some() {
                reply.strip_prefix("+OK\r\n")
            } else {
                Some(reply.as_str())
            };
            if let Some(keys) = list.and_then(parse_list) {
                return keys;
            }
            assert!(!reply.starts_with('-'), "redis-server refused: {reply:?}");
        }
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

/// The strings of a whole RESP list (`*2\r\n$3\r\nabc\r\n...`), or `None` while it is
/// incomplete.
fn parse_list(reply: &str) -> Option<Vec<String>> {
    let (count, mut rest) = reply.strip_prefix('*')?.split_once("\r\n")?;
    let count: usize = count.parse().ok()?;
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        let (length, tail) = rest.strip_prefix('$')?.split_once("\r\n")?;
        let length: usize = length.parse().ok()?;
        items.push(tail.get(..length)?.to_owned());
        rest = tail.get(length..)?.strip_prefix("\r\n")?;
    }
    Some(items)
}

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Sends one command to the server on `port` and returns its reply's text (a simple string,
/// an error, an integer or a bulk string), waiting a second at most.
///
/// # Panics
///
/// When nothing answers on `port`, or not in time.
pub(crate) fn command(port: u16, args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("redis-server runs");
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let mut buffer = [0; 4096];
    loop {
        let n = stream.read(&mut buffer).expect("redis-server answers");
        assert!(n > 0, "redis-server closed the connection: {reply:?}");
        reply.push_str(&String::from_utf8_lossy(&buffer[..n]));
        let Some((head, body)) = reply.split_once("\r\n") else {
            continue;
        };
        match head.strip_prefix('$') {
            Some(length) => {
                let length: usize = length.parse().unwrap_or(0);
                if body.len() >= length {
                    return body[..length].to_owned();
                }
            }
            None => return head.to_owned(),
        }
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_list_is_read_whole_or_not_at_all() {
        assert_eq!(super::parse_list("*0\r\n"), Some(vec![]));
        assert_eq!(
            super::parse_list("*2\r\n$3\r\nabc\r\n$1\r\nd\r\n"),
            Some(vec!["abc".to_owned(), "d".to_owned()])
        );
        assert_eq!(super::parse_list("*2\r\n$3\r\nabc\r\n$1\r"), None);
    }
}
