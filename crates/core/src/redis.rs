//! What every layer that keeps state in Redis needs (feature `redis`): where Redis is (one
//! server, or a Redis Cluster), a connection that fails fast, commands under a wall-clock
//! timeout, URLs shown without their password, and the health of the link.
//!
//! # One server or a cluster
//!
//! A [`Target`] is read from a URL: `redis://` and `rediss://` (TLS) name one server (or
//! Valkey, or a primary behind Sentinel's address); `redis+cluster://` and
//! `rediss+cluster://` name any node of a Redis Cluster (or Valkey cluster), from which the
//! client learns the others and follows the slots as they move. Every layer keeps the keys one
//! command or script touches under one hash tag, so each runs on one node.
//!
//! # Why
//!
//! A fleet's shared state (rate limits, budgets, circuits, pool cooldowns, the cache's second
//! level) is an optimisation over each process's own: a call must never wait on a Redis that is
//! gone. So every connection here fails fast ([`open`]: no retries, a [`CONNECTION_TIMEOUT`],
//! no response timeout of its own), every command runs under a timeout ([`guarded`]), and
//! while Redis is unreachable a layer works on its own, says so once per outage, probes Redis
//! on a fresh connection every retry interval ([`Connection::reconnect`]) and says when it
//! answers again ([`Health`]). What a layer does meanwhile, and the words it logs, are its own.
//!
//! # Time
//!
//! [`guarded`]'s timeout is wall-clock time kept by a parked blocking-pool thread, not a tokio
//! timer: a network round trip takes real time even when tokio's clock is paused
//! (`start_paused` tests), where a timer would fire as soon as every task waits. While that
//! thread waits, a paused clock does not auto-advance either, so in tests a round trip to Redis
//! takes no simulated time at all. It costs a thread hand-off per command.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{PoisonError, RwLock};
use std::task::Poll;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::time::Instant;

use crate::BoxError;

/// How long connecting (or reconnecting) to Redis may take.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a layer's Redis is: one server, or a cluster (see [One server or a
/// cluster](self#one-server-or-a-cluster)).
#[derive(Clone)]
pub struct Target {
    kind: Kind,
    /// The URL without its password.
    shown: String,
}

#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per layer's connection, made once"
)]
enum Kind {
    Server(::redis::Client),
    Cluster(ClusterClient),
}

impl Target {
    /// Reads `url`: `redis://[[user]:password@]host[:port][/db]`, `rediss://…` for TLS, or
    /// `redis+cluster://…` / `rediss+cluster://…` for a cluster's node (`valkey` for `redis`
    /// too).
    ///
    /// # Errors
    ///
    /// An invalid URL, named without its password.
    pub fn parse(url: &str) -> Result<Self, BoxError> {
        let shown = redact(url);
        let invalid = |e: ::redis::RedisError| format!("invalid redis url {shown}: {e}");
        let cluster = url
            .split_once("://")
            .and_then(|(scheme, rest)| Some((scheme.strip_suffix("+cluster")?, rest)));
        let kind = match cluster {
            Some((scheme, rest)) => {
                let seed = format!("{scheme}://{rest}");
                let client = ClusterClient::builder([seed.as_str()])
                    .connection_timeout(CONNECTION_TIMEOUT)
                    .build()
                    .map_err(invalid)?;
                Kind::Cluster(client)
            }
            None => Kind::Server(::redis::Client::open(url).map_err(invalid)?),
        };
        Ok(Self { kind, shown })
    }

    /// Whether it names a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    /// The URL without its password, to show.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Target").field(&self.shown).finish()
    }
}

/// A connection to a [`Target`]: to one server, or to a cluster (one per node, kept by the
/// client). Clones share it.
#[derive(Clone)]
pub enum Link {
    /// To one server.
    Server(ConnectionManager),
    /// To a cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Server(_) => "Link::Server",
            Self::Cluster(_) => "Link::Cluster",
        })
    }
}

/// A connection to `target` that fails fast: for one server no retries (the layer probes on
/// its own schedule, see [`Health`]), [`CONNECTION_TIMEOUT`] to connect, and no response
/// timeout of its own (each command runs under [`guarded`]'s); a cluster's client follows its
/// nodes' redirections.
///
/// # Errors
///
/// When the server cannot be reached (refused, TLS, authentication, the connection timeout).
pub async fn open(target: &Target) -> RedisResult<Link> {
    match &target.kind {
        Kind::Server(client) => {
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(Some(CONNECTION_TIMEOUT))
                .set_response_timeout(None);
            ConnectionManager::new_with_config(client.clone(), config)
                .await
                .map(Link::Server)
        }
        Kind::Cluster(client) => client.get_async_connection().await.map(Link::Cluster),
    }
}

/// Runs one Redis command, failing it after `timeout` of wall-clock time (see
/// [Time](self#time)).
///
/// # Errors
///
/// The command's error, or an [`io::ErrorKind::TimedOut`](std::io::ErrorKind::TimedOut) error,
/// `redis did not answer within {timeout:?}`.
///
/// # Panics
///
/// Outside a tokio runtime.
pub async fn guarded<T>(
    timeout: Duration,
    command: impl Future<Output = RedisResult<T>>,
) -> Result<T, BoxError> {
    // Dropping `_done` (the command answered, or this future was dropped) wakes the thread.
    let (_done, done_rx) = std::sync::mpsc::channel::<()>();
    let mut watchdog = Some(tokio::task::spawn_blocking(move || {
        done_rx.recv_timeout(timeout) == Err(RecvTimeoutError::Timeout)
    }));
    let mut command = pin!(command);
    poll_fn(|cx| {
        if let Poll::Ready(result) = command.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(BoxError::from));
        }
        if let Some(handle) = watchdog.as_mut()
            && let Poll::Ready(fired) = Pin::new(handle).poll(cx)
        {
            watchdog = None;
            if fired.unwrap_or(false) {
                let error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("redis did not answer within {timeout:?}"),
                );
                return Poll::Ready(Err(error.into()));
            }
        }
        Poll::Pending
    })
    .await
}

/// The connection a layer's commands share, replaced by a fresh one when Redis answers again
/// after an outage (the old one may still be waiting on a command sent to a server that
/// stopped).
pub struct Connection {
    target: Target,
    current: RwLock<Link>,
}

impl Connection {
    /// Connects to `target` through [`open`], within [`CONNECTION_TIMEOUT`] of wall-clock
    /// time.
    ///
    /// # Errors
    ///
    /// When Redis does not answer in time; the error names the URL without its password.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect(target: Target) -> Result<Self, BoxError> {
        let current = guarded(CONNECTION_TIMEOUT, open(&target))
            .await
            .map_err(|e| format!("cannot reach redis at {}: {e}", target.shown()))?;
        Ok(Self::new(target, current))
    }

    /// `current`, a connection to `target` made with [`open`].
    pub fn new(target: Target, current: Link) -> Self {
        Self {
            target,
            current: RwLock::new(current),
        }
    }

    /// The connection to send commands on.
    pub fn get(&self) -> Link {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where it connects.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Probes Redis on a fresh connection: once it has answered a `PING`, within
    /// [`CONNECTION_TIMEOUT`], the fresh connection replaces the current one.
    ///
    /// # Errors
    ///
    /// When Redis does not answer in time (the current connection stays).
    pub async fn reconnect(&self) -> Result<(), BoxError> {
        let fresh = async {
            let mut conn = open(&self.target).await?;
            ::redis::cmd("PING")
                .query_async::<::redis::Value>(&mut conn)
                .await?;
            Ok(conn)
        };
        let fresh = guarded(CONNECTION_TIMEOUT, fresh).await?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's own `Debug` would show the URL, password included.
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// `url` without its password (and without a query, where a unix socket's would be), to show
/// in messages and `Debug`: `redis://app:***@redis.internal:6379/2`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unparsable url)".into();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// Whether Redis answers, and when to try it again if not.
///
/// A layer reports each failed command with [`failed`](Self::failed) and each answer to a probe
/// with [`recovered`](Self::recovered); both say whether the state changed, so that the layer
/// warns once per outage and says once that Redis answers again, in its own words. Meanwhile
/// [`is_probe_due`](Self::is_probe_due) says when a retry interval has passed since the last
/// failure.
pub struct Health {
    degraded: AtomicBool,
    /// Nanoseconds after `start` of the next probe.
    next_probe: AtomicU64,
    /// Outages begun so far.
    outages: AtomicU64,
    start: Instant,
}

impl Health {
    /// Healthy: nothing has failed yet.
    pub fn new() -> Self {
        Self {
            degraded: AtomicBool::new(false),
            next_probe: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// Whether Redis is unreachable now.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// A command failed now: degraded until a probe, due `retry` from now, finds Redis again.
    /// Whether this failure began an outage (say so then).
    pub fn failed(&self, retry: Duration) -> bool {
        let retry = u64::try_from(retry.as_nanos()).unwrap_or(u64::MAX);
        let retry_at = self.nanos(Instant::now()).saturating_add(retry);
        self.next_probe.store(retry_at, Ordering::Release);
        let began = !self.degraded.swap(true, Ordering::AcqRel);
        if began {
            self.outages.fetch_add(1, Ordering::AcqRel);
        }
        began
    }

    /// Whether Redis is unreachable and a probe is due at `now`.
    pub fn is_probe_due(&self, now: Instant) -> bool {
        self.is_degraded() && self.until_probe(now).is_zero()
    }

    /// How long after `now` the next probe is due (zero when it is, or when nothing failed).
    pub fn until_probe(&self, now: Instant) -> Duration {
        let next = self.next_probe.load(Ordering::Acquire);
        Duration::from_nanos(next.saturating_sub(self.nanos(now)))
    }

    /// Redis answered (a probe, or a command): healthy again. Whether this ended an outage
    /// (say so then).
    pub fn recovered(&self) -> bool {
        self.degraded.swap(false, Ordering::AcqRel)
    }

    /// How many outages have begun so far: the number of the one under way (or the last one).
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Acquire)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("degraded", &self.is_degraded())
            .field("outages", &self.outages())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(
            redact("redis://:hunter2@redis.internal:6379/2"),
            "redis://:***@redis.internal:6379/2"
        );
        assert_eq!(
            redact("redis://app:hunter2@10.0.0.1"),
            "redis://app:***@10.0.0.1"
        );
        assert_eq!(
            redact("rediss://app:hunter2@h:1?password=x"),
            "rediss://app:***@h:1"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("hunter2"), "(unparsable url)");
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_begins_once_and_is_probed_every_retry_interval() {
        let health = Health::new();
        let retry = Duration::from_secs(1);
        assert!(!health.is_degraded());
        assert!(!health.is_probe_due(Instant::now()));
        assert!(!health.recovered(), "nothing to recover from");

        assert!(health.failed(retry), "the first failure begins the outage");
        assert!(!health.failed(retry), "the next ones do not");
        assert_eq!(health.outages(), 1);
        assert!(!health.is_probe_due(Instant::now()));
        assert_eq!(health.until_probe(Instant::now()), retry);

        tokio::time::advance(retry).await;
        assert!(health.is_probe_due(Instant::now()));
        assert!(!health.failed(retry), "a failed probe: the same outage");
        assert!(!health.is_probe_due(Instant::now()));

        assert!(health.recovered(), "the first answer ends the outage");
        assert!(!health.recovered());
        assert!(!health.is_probe_due(Instant::now() + retry));
        assert!(health.failed(retry), "a second outage");
        assert_eq!(health.outages(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_command_fails_on_the_wall_clock() {
        let timeout = Duration::from_millis(50);
        let error = guarded(timeout, std::future::pending::<RedisResult<()>>())
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "redis did not answer within 50ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_trip_takes_no_simulated_time() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = tx.send(());
        });
        // A timer pending: an idle runtime under a paused clock would jump to it.
        let timer = tokio::spawn(tokio::time::sleep(Duration::from_secs(1)));
        let start = Instant::now();
        let answer = guarded(Duration::from_secs(5), async {
            rx.await
                .map_err(|_| ::redis::RedisError::from(std::io::Error::other("gone")))
        })
        .await;
        assert!(answer.is_ok());
        assert_eq!(start.elapsed(), Duration::ZERO);
        timer.abort();
    }
}
