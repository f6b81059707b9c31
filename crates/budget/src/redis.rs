//! [`RedisBooks`]: budgets that hold across a fleet of processes, kept in Redis.
//!
//! Several processes (gateway replicas, workers) that share a budget must not overspend it
//! together; each process's own books cannot know what the others hold. With
//! [`BudgetLayer::configured_with_redis`](crate::BudgetLayer::configured_with_redis), every
//! process that uses the same Redis and key prefix keeps one set of books there:
//!
//! - **reserve**: a call's worst case is reserved in every budget that applies by one atomic
//!   Lua script, all or nothing, checking `spent + reserved + worst <= limit` in dollars
//!   (integer picodollars, exact however large) and tokens — the in-memory ledger's rule, for
//!   the whole fleet at once. The round trip is made by the response future, before the
//!   inner service is called;
//! - **settle**: when the call ends, its reservation is replaced by its cost. This process
//!   queues the change and a background task sends it within milliseconds (one script call
//!   for many settlements, applied once even if it is sent again after a timeout);
//! - **windows**: spend lives in one key per budget and slot of its window
//!   (`{tollgate:budget}:<budget>:spend:<slot start>`), the slots of [`window`](crate::window)
//!   that the in-memory books use, and each key expires when its spend stops counting;
//! - **reservations that outlive their process**: each reservation carries an expiry
//!   ([`hold`](RedisBooks::with_hold), 30 s) that this process renews every sixth of it while
//!   the call runs; a process that dies stops renewing, and the next script that touches the
//!   budget drops what it held.
//!
//! # Consistency
//!
//! As long as no call costs more than its worst case and Redis answers, the fleet's
//! reconciled spend never passes a budget's limit: every admission is checked, atomically,
//! against the fleet's spend and the worst case of every call in flight anywhere. What a
//! process may see late:
//!
//! - **a settled call**: its cost reaches Redis a few milliseconds after its body ends; until
//!   then Redis still holds its worst case, so the others see *more* taken, never less;
//! - **a dead process's calls**: their worst cases stay reserved for at most one hold (30 s)
//!   after its last renewal — up to a hold and a sixth after it died. Their money comes back
//!   then, though the provider may still bill those calls: what a crashed process's calls
//!   cost is never counted (at most one worst case per call it had in flight);
//! - **the snapshot** ([`BudgetLayer::snapshot`](crate::BudgetLayer::snapshot)): spend and
//!   reservations as Redis reported them on this process's last round trip (every
//!   reservation, and at least every renewal, 5 s), plus this process's unsent settlements.
//!
//! # When Redis is unreachable
//!
//! Every command fails after [`command_timeout`](RedisBooks::with_command_timeout) (250 ms)
//! of wall-clock time, or at once when the connection is refused; a call never waits on
//! Redis longer. The books say so once per outage (`tracing::warn!`) and then:
//!
//! - **fail-open** (the default): this process keeps books of its own, limited to
//!   [`local_share`](RedisBooks::with_local_share) of what was left of each budget when Redis
//!   last answered (limit − spent − reserved, as last reported). With a share of `1/N` for
//!   `N` processes the fleet stays within its limits, overshooting by at most what the others
//!   took between each process's last answer from Redis and the outage; with the default
//!   share of 1, each process may spend what was left, up to `N` times it together;
//! - **fail-closed** ([`with_fail_closed`](RedisBooks::with_fail_closed)): the call is refused
//!   with [`BudgetUnavailable`](crate::BudgetUnavailable), which may succeed later.
//!
//! Spend settled meanwhile is queued (one sum per budget and slot, so the queue stays small;
//! reservations to give back are queued up to 100,000 — past that they are left to expire)
//! and sent when Redis answers again. Every [`retry_interval`](RedisBooks::with_retry_interval)
//! (1 s) Redis is tried on a fresh connection. A Redis that comes back empty (restarted
//! without persistence) gets back, from the first process to reach it, the spend that
//! process last saw in each budget's current slot, and then the queued settlements: spend the
//! fleet settled between that process's last look and the outage is lost. Run Redis with
//! persistence (AOF) when budgets matter.
//!
//! # Keys
//!
//! Under the prefix (`tollgate:budget`, written as a hash tag, `{tollgate:budget}`, so that
//! one script may touch every budget on one Redis Cluster node), per budget: `<budget>:held`
//! (reservation id → worst case), `<budget>:expiry` (the ids by expiry), `<budget>:reserved`
//! (their sum) and `<budget>:spend:<slot start>` (dollars and tokens); and `batch:<process>:<n>`,
//! which marks a batch of settlements applied for an hour.

mod fleet;
mod script;
mod settle;
mod worker;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tollgate_core::BoxError;
use tollgate_core::redis::{Connection, Health, Target};

pub(crate) use self::fleet::{Fleet, Hold, Plan};

/// A fleet's budget books in Redis, for
/// [`BudgetLayer::configured_with_redis`](crate::BudgetLayer::configured_with_redis); see the
/// [module docs](self).
///
/// ```no_run
/// use tollgate_budget::{BudgetConfig, BudgetLayer, RedisBooks};
///
/// # async fn demo(config: BudgetConfig) -> Result<(), tollgate_core::BoxError> {
/// let books = RedisBooks::connect("redis://:password@redis.internal:6379")
///     .await?
///     .with_local_share(1.0 / 4.0); // four replicas: a quarter each if Redis goes away
/// let layer = BudgetLayer::configured_with_redis(&config, books)?;
/// # Ok(()) }
/// ```
///
/// # Clone
///
/// Clones share the connection and the options (an option set on one clone applies to all;
/// set them before building a layer).
#[derive(Clone)]
pub struct RedisBooks {
    pub(crate) link: Arc<Link>,
    /// The books of the layer this was given to.
    pub(crate) fleet: Option<Arc<Fleet>>,
}

/// The connection and what every set of books on it shares.
pub(crate) struct Link {
    conn: Connection,
    /// The URL without its password.
    url: String,
    /// Names this process's reservations and batches.
    process: String,
    settings: RwLock<Settings>,
    health: Health,
    /// Where the background tasks run.
    runtime: tokio::runtime::Handle,
}

/// The options.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    prefix: String,
    command_timeout: Duration,
    fail_open: bool,
    local_share: f64,
    retry_interval: Duration,
    hold: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: "tollgate:budget".into(),
            command_timeout: Duration::from_millis(250),
            fail_open: true,
            local_share: 1.0,
            retry_interval: Duration::from_secs(1),
            hold: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// How often a process renews the reservations of its calls in flight.
    fn renew_every(&self) -> Duration {
        self.hold / 6
    }

    /// How often the background task looks for work.
    fn tick(&self) -> Duration {
        (self.retry_interval.min(self.renew_every()) / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(250))
    }

    /// The local share in parts per million.
    fn share_ppm(&self) -> u32 {
        (self.local_share * 1e6).round() as u32
    }
}

impl RedisBooks {
    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`).
    ///
    /// # Errors
    ///
    /// When the URL is invalid or Redis does not answer within a second: a fleet that starts
    /// without its shared books is a configuration error, surfaced at startup. The password
    /// never appears in the error.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect(url: &str) -> Result<Self, BoxError> {
        let target = Target::parse(url)?;
        let shown = target.shown().to_owned();
        let conn = Connection::connect(target).await?;
        let process = format!(
            "{:016x}",
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        );
        Ok(Self {
            link: Arc::new(Link {
                conn,
                url: shown,
                process,
                settings: RwLock::new(Settings::default()),
                health: Health::default(),
                runtime: tokio::runtime::Handle::current(),
            }),
            fleet: None,
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

    /// The keys' prefix (default `tollgate:budget`): processes with the same Redis and prefix
    /// share their budgets.
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.configure(|s| s.prefix = prefix)
    }

    /// How long a Redis command may take, in wall-clock time, before Redis counts as
    /// unreachable (default 250 ms): the longest a call waits on Redis.
    pub fn with_command_timeout(self, timeout: Duration) -> Self {
        self.configure(|s| s.command_timeout = timeout)
    }

    /// Refuses calls with [`BudgetUnavailable`](crate::BudgetUnavailable) while Redis is
    /// unreachable, instead of keeping books locally (fail-open, the default).
    pub fn with_fail_closed(self, fail_closed: bool) -> Self {
        self.configure(|s| s.fail_open = !fail_closed)
    }

    /// The share of what was left of each budget that this process allows itself while Redis
    /// is unreachable (default 1; set it to 1/N for N processes).
    ///
    /// # Panics
    ///
    /// When `share` is not within 0 (excluded) to 1.
    pub fn with_local_share(self, share: f64) -> Self {
        assert!(
            share > 0.0 && share <= 1.0,
            "local_share must be within (0, 1], not {share}"
        );
        self.configure(|s| s.local_share = share)
    }

    /// How often to try Redis again while it is unreachable (default 1 s).
    pub fn with_retry_interval(self, interval: Duration) -> Self {
        self.configure(|s| s.retry_interval = interval)
    }

    /// How long a reservation lasts unless its process renews it (default 30 s; renewed every
    /// sixth of it): the longest the money of a dead process's calls stays reserved after its
    /// last renewal.
    ///
    /// # Panics
    ///
    /// When `hold` is under a second.
    pub fn with_hold(self, hold: Duration) -> Self {
        assert!(
            hold >= Duration::from_secs(1),
            "hold must be at least a second, not {hold:?}"
        );
        self.configure(|s| s.hold = hold)
    }

    /// Whether Redis is unreachable now (the books are local, or calls refused, until it
    /// answers again).
    pub fn is_degraded(&self) -> bool {
        self.link.health.is_degraded()
    }
}

impl Link {
    fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for RedisBooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBooks")
            .field("url", &self.link.url)
            .field("settings", &self.link.settings())
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}
