//! [`RedisBreakerState`]: one breaker per scope for a whole fleet of processes, shared through
//! Redis (feature `redis`).
//!
//! Several processes (gateway replicas, workers) call the same upstream keys. With each
//! process's circuits in its own memory, the replica that sees a provider fail opens while the
//! others keep sending; with [`CircuitBreakerLayer::with_redis`](crate::CircuitBreakerLayer::with_redis)
//! every process that uses the same Redis and prefix shares one circuit per scope:
//!
//! - **open**: each process still decides from its own window of outcomes. When one trips, its
//!   worker publishes the open period (its end as a wall-clock instant, the trips in a row) to
//!   the scope's record in Redis. Every process reads the records that are not closed every
//!   [`sync_interval`](RedisBreakerState::with_sync_interval) (100 ms) and opens its own circuit
//!   until that instant: its calls are refused exactly as if it had tripped, with the same
//!   [`CircuitOpen`](tollgate_core::error::CircuitOpen) and `retry_after`;
//! - **half-open**: when the period ends, every process's circuit goes half-open with no probe
//!   of its own. A call refused for want of one (its `retry_after` one sync interval: a pool
//!   above then tries the member again that soon) asks the worker, which claims probes from the
//!   scope's record with one atomic script: at most
//!   [`half_open_probes`](crate::CircuitConfig::half_open_probes) in the whole fleet per open
//!   period. Probes claimed but not sent within a second go back to the fleet;
//! - **probe outcomes**: a success is counted in the record, and the configured number of
//!   successes deletes it: closed, for everyone. A failure re-opens the scope for everyone,
//!   for the next step of the backoff (the trips in a row are the fleet's);
//! - **by hand**: [`force_open`](crate::CircuitHandle::force_open),
//!   [`reset`](crate::CircuitHandle::reset), [`disable`](crate::CircuitHandle::disable) and
//!   [`metrics_only`](crate::CircuitHandle::metrics_only) on one process act on every process.
//!
//! # Why polling, not pub/sub
//!
//! Every process reads all the records that are not closed (one script, one round trip, a few
//! bytes per open scope) each sync interval. A pub/sub message is sent once: a process that is
//! reconnecting at that moment, or starts a second later, never hears it and needs a read of
//! the records anyway. Reading them on a timer is that read, with one connection, the same
//! timeout and the same outage handling as every other command, and it costs one round trip per
//! interval per process whatever the traffic. A process's own changes are sent at once (the
//! worker is woken), not on the timer.
//!
//! # Consistency
//!
//! - **How late a process sees an open**: within one sync interval plus a round trip after the
//!   tripping process's worker wrote it (which it does within a round trip of the trip): about
//!   100 ms with the defaults. Meanwhile its calls go through as before, and count in its own
//!   window. A circuit made after the open (a scope this process had not called yet) starts
//!   from the last read.
//! - **The probe bound**: at most `half_open_probes` probes per open period in the whole fleet,
//!   by the claim script, as long as Redis answers; a process's own circuit never lets more
//!   through than it was granted. The first call of a process after the open period ends is
//!   refused while its worker claims (a round trip).
//! - **Open periods** are wall-clock instants: the processes agree within their clocks' skew.
//!
//! # Keys
//!
//! Under the prefix (`tollgate:circuit`, written as a hash tag, `{tollgate:circuit}`, so that
//! one script may touch a record and the index on one Redis Cluster node): one hash per scope,
//! `{tollgate:circuit}:<provider>/<credential id>/<model>` (the credential by its id or
//! fingerprint, never its secret), and `{tollgate:circuit}:index`, the records not closed by
//! expiry. A record expires one [`max_open_duration`](crate::CircuitConfig::max_open_duration)
//! after its open period ends (the time its probes have to report; its key is gone sooner when
//! the probes close it); a manual mode lasts until reset. A scope nobody called for that long
//! after its open period (no probe ever reported) is closed in every process when its record
//! expires, rather than left half-open.
//!
//! # What this costs
//!
//! The closed path is the in-memory breaker's, untouched: no Redis, no extra atomic. Per
//! process, one script call per sync interval (the read), plus one per transition, probe
//! claim and probe success.
//!
//! # When Redis is unreachable
//!
//! Calls never wait on Redis: each is decided by its process's circuit, which the worker keeps
//! in step. Every command fails after [`command_timeout`](RedisBreakerState::with_command_timeout)
//! (250 ms) of wall-clock time, or at once when refused. Then the state says so once
//! (`tracing::warn!`) and every circuit works on its own, as without Redis (fail-open: a
//! half-open circuit counts its probes alone); a Redis error is never an upstream failure.
//! Every [`retry_interval`](RedisBreakerState::with_retry_interval) (1 s) Redis is tried on a
//! fresh connection; once it answers, the circuits that tripped meanwhile and are still open
//! publish their open periods, and the next read brings the others in step.

mod script;
mod side;
mod worker;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use tollgate_core::BoxError;
use tollgate_core::redis::{Connection, Health, Target};

pub(crate) use self::side::{FleetSide, Hook};
pub(crate) use self::worker::seed;
use crate::config::CircuitConfig;
use crate::layer::Breakers;

/// A Redis connection for circuits shared by a fleet, for
/// [`CircuitBreakerLayer::with_redis`](crate::CircuitBreakerLayer::with_redis); see the
/// [module docs](self).
///
/// ```no_run
/// use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig, RedisBreakerState};
///
/// # async fn demo() -> Result<(), tollgate_core::BoxError> {
/// let state = RedisBreakerState::connect("redis://:password@redis.internal:6379").await?;
/// let layer = CircuitBreakerLayer::new(CircuitConfig::default())?.with_redis(state);
/// # Ok(()) }
/// ```
///
/// # Clone
///
/// Clones share the connection and the options (an option set on one clone applies to all;
/// set them before giving it to a layer).
#[derive(Clone)]
pub struct RedisBreakerState {
    pub(crate) link: Arc<Link>,
}

/// The connection and its options.
pub(crate) struct Link {
    pub(crate) conn: Connection,
    /// The URL without its password.
    url: String,
    settings: RwLock<Settings>,
    pub(crate) health: Health,
    /// Where the workers run.
    runtime: tokio::runtime::Handle,
}

/// The options.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) prefix: String,
    pub(crate) command_timeout: Duration,
    pub(crate) sync_interval: Duration,
    pub(crate) retry_interval: Duration,
    pub(crate) probe_hold: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: "tollgate:circuit".into(),
            command_timeout: Duration::from_millis(250),
            sync_interval: Duration::from_millis(100),
            retry_interval: Duration::from_secs(1),
            probe_hold: Duration::from_secs(1),
        }
    }
}

impl RedisBreakerState {
    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`).
    ///
    /// # Errors
    ///
    /// When the URL is invalid or Redis does not answer within a second: a fleet that starts
    /// without its shared circuits is a configuration error, surfaced at startup. The password
    /// never appears in the error.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect(url: &str) -> Result<Self, BoxError> {
        let target = Target::parse(url)?;
        let shown = target.shown().to_owned();
        let conn = Connection::connect(target).await?;
        Ok(Self {
            link: Arc::new(Link {
                conn,
                url: shown,
                settings: RwLock::new(Settings::default()),
                health: Health::default(),
                runtime: tokio::runtime::Handle::current(),
            }),
        })
    }

    fn configure(self, change: impl FnOnce(&mut Settings)) -> Self {
        change(
            &mut self
                .link
                .settings
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self
    }

    /// The keys' prefix (default `tollgate:circuit`): processes with the same Redis and prefix
    /// share their circuits.
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.configure(|s| s.prefix = prefix)
    }

    /// How long a Redis command may take, in wall-clock time, before Redis counts as
    /// unreachable (default 250 ms).
    pub fn with_command_timeout(self, timeout: Duration) -> Self {
        self.configure(|s| s.command_timeout = timeout)
    }

    /// How often each process reads the fleet's open circuits (default 100 ms): the longest,
    /// plus a round trip, a process keeps sending after another opened.
    ///
    /// # Panics
    ///
    /// When `interval` is under a millisecond.
    pub fn with_sync_interval(self, interval: Duration) -> Self {
        assert!(
            interval >= Duration::from_millis(1),
            "sync_interval must be at least 1 ms, not {interval:?}"
        );
        self.configure(|s| s.sync_interval = interval)
    }

    /// How often to try Redis again while it is unreachable (default 1 s).
    pub fn with_retry_interval(self, interval: Duration) -> Self {
        self.configure(|s| s.retry_interval = interval)
    }

    /// How long probes granted to this process may wait for a call before they go back to the
    /// fleet (default 1 s).
    pub fn with_probe_hold(self, hold: Duration) -> Self {
        self.configure(|s| s.probe_hold = hold)
    }

    /// Whether Redis is unreachable now (each circuit works on its own until it answers).
    pub fn is_degraded(&self) -> bool {
        self.link.health.is_degraded()
    }

    /// Starts the worker that keeps `breakers` in step with the fleet.
    pub(crate) fn attach(
        &self,
        breakers: Weak<Breakers>,
        hook: Arc<Hook>,
        config: Arc<CircuitConfig>,
    ) {
        self.link.runtime.spawn(worker::run(breakers, hook, config));
    }
}

impl Link {
    pub(crate) fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("url", &self.url)
            .field("settings", &self.settings())
            .field("degraded", &self.health.is_degraded())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisBreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBreakerState")
            .field("url", &self.link.url)
            .field("settings", &self.link.settings())
            .field("degraded", &self.is_degraded())
            .finish()
    }
}
