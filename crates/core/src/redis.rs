//! What every layer that keeps state in Redis needs (feature `redis`): a connection that fails
//! fast, commands under a wall-clock timeout, URLs shown without their password, and the
//! health of the link.
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

use ::redis::RedisResult;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use crate::BoxError;

/// How long connecting (or reconnecting) to Redis may take.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to `client`'s server that fails fast: no retries (the layer probes on its own
/// schedule, see [`Health`]), [`CONNECTION_TIMEOUT`] to connect, and no response timeout (each
/// command runs under [`guarded`]'s).
///
/// # Errors
///
/// When the server cannot be reached (refused, TLS, authentication, the connection timeout).
pub async fn open(client: &::redis::Client) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(None);
    ConnectionManager::new_with_config(client.clone(), config).await
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
    client: ::redis::Client,
    current: RwLock<ConnectionManager>,
}

impl Connection {
    /// Connects to `client`'s server through [`open`], within [`CONNECTION_TIMEOUT`] of
    /// wall-clock time.
    ///
    /// # Errors
    ///
    /// When the server does not answer in time.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect(client: ::redis::Client) -> Result<Self, BoxError> {
        let current = guarded(CONNECTION_TIMEOUT, open(&client)).await?;
        Ok(Self::new(client, current))
    }

    /// `current`, a connection to `client`'s server made with [`open`].
    pub fn new(client: ::redis::Client, current: ConnectionManager) -> Self {
        Self {
            client,
            current: RwLock::new(current),
        }
    }

    /// The connection to send commands on.
    pub fn get(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Probes the server on a fresh connection: once it has answered a `PING`, within
    /// [`CONNECTION_TIMEOUT`], the fresh connection replaces the current one.
    ///
    /// # Errors
    ///
    /// When the server does not answer in time (the current connection stays).
    pub async fn reconnect(&self) -> Result<(), BoxError> {
        let fresh = async {
            let mut conn = open(&self.client).await?;
            ::redis::cmd("PING")
                .query_async::<String>(&mut conn)
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
