//! [`RedisPoolState`]: cooldowns and health that hold for a whole fleet of processes running
//! the same pool, kept in sync through Redis.
//!
//! # Why
//!
//! Each process's pool keeps its members' cooldowns in memory. In a fleet (gateway replicas
//! sharing one set of keys), a key revoked upstream is seen by one replica — its 401 takes the
//! key out there — while every other replica keeps sending it calls, each of which fails over
//! after a wasted round trip, until each has seen its own 401. The same goes for a 429 with a
//! long `retry-after`, an exhausted quota, a deployment that times out. With shared state,
//! what one replica learns the others apply within a fraction of a second.
//!
//! # How
//!
//! - **Publishing**: when a member goes out of rotation in one process (any [`Reason`]), a
//!   background task of that pool writes its reason and until-when to the key
//!   `{<prefix>}:cooldown:<member>` (default prefix `tollgate:pool`, written as a hash tag
//!   so that a pool's keys share a slot on Redis Cluster), expiring when the cooldown ends (a
//!   parked member's key has no expiry: it waits for a reset, like the member). One Lua script keeps the longer of the cooldown already there and the new one.
//! - **Polling**: every [`sync_interval`](RedisPoolState::with_sync_interval) (250 ms) the task
//!   reads every member's keys with one `MGET` and applies, under the pool's lock, any
//!   cooldown longer than the one this process holds.
//! - **Counting**: in the same task, every sync interval, one pipeline adds the calls this
//!   process made to each member since the last time to `{<prefix>}:counters:<member>` (a hash:
//!   calls, successes, 429s, timeouts, server and auth errors, exhausted quotas, breaker
//!   refusals and the successes' latency) and reads every member's back; what the others'
//!   calls met moves this process's moving averages, hence its scores.
//! - **Resetting**: [`PoolHandle::reset`](crate::PoolHandle::reset) (and `reset_all`) clears
//!   the member here at once, then writes `{<prefix>}:reset:<member>` (the reset's time, kept a
//!   day) and deletes the cooldown key. A process that reads a reset later than the start of
//!   the cooldown it holds clears it; a cooldown that began before the last reset is never
//!   written or applied again.
//!
//! `<member>` is the member's name, and, for a member with a key of its own, the key's
//! fingerprint ([`CredentialId`](tollgate_core::CredentialId), `key-` and 16 hex digits of its
//! SHA-256): `{tollgate:pool}:cooldown:openai-a:key-3f5c9a1e0b7d2c44`. Two processes share a
//! member's cooldowns when they give it the same name and the same key; a rotated key starts
//! afresh. The key itself is never sent to Redis, logged or shown.
//!
//! Calls never wait on Redis: picking a member reads this process's memory only, and the
//! publish, the poll and the reset are the background task's. A pool without shared state does
//! exactly what it did before (the shared state is one `Option` looked at when a member goes
//! out of rotation or is reset, never when one is picked).
//!
//! ## Why polling and not pub/sub
//!
//! Polling one `MGET` of the pool's few keys every 250 ms bounds how late a process learns of a
//! cooldown without anything to lose: a message published while a subscriber was
//! reconnecting is gone, so pub/sub would need a periodic resync anyway, plus a second
//! connection per process kept in a subscribed state, with its own reconnection and timeout
//! handling. The cost of polling is small and fixed — 4 `MGET`s a second per process of two
//! keys per member — and a fleet's cooldowns are rare; the key that holds a cooldown also
//! gives a process that starts (or comes back) the fleet's current state at its first read.
//!
//! # Consistency
//!
//! - **How late**: a process applies another's cooldown at most one sync interval plus two
//!   round trips after that process recorded it (250 ms and a few milliseconds by default;
//!   the publish is sent as soon as the cooldown is recorded). Until then it may send the
//!   member calls of its own, each of which fails over as without a fleet.
//! - **Disagreements**: each cooldown carries its until-when, and the longer one wins, in Redis
//!   and in every process: two replicas that took a member out for different times (a 429
//!   with `retry-after: 2` and a timeout's 10 s) both end up with the longer. A parked member
//!   (no end) outlasts any cooldown. A process's own cooldown is never shortened by the
//!   fleet's; only a reset shortens it.
//! - **Resets** win over cooldowns that began before them, wherever those were recorded, and
//!   lose to those that began after (a call still in flight during a reset that then fails
//!   takes the member out again, everywhere).
//! - **Clocks**: until-when and since are wall-clock times (microseconds since the Unix
//!   epoch, read once per process and then advanced by tokio's clock), so processes agree
//!   within their clocks' skew (NTP: milliseconds); a cooldown's end moves by that skew from
//!   one process to another.
//! - **Health counters and scores**: each process adds its members' counts to the fleet's
//!   every sync interval and takes in what the others' calls met, so its scores follow the
//!   fleet's calls a sync interval and a round trip late (see the `counters` module);
//!   [`MemberReport::fleet`](crate::MemberReport::fleet) has the fleet's counts.
//!
//! # When Redis is unreachable
//!
//! Every command fails after [`command_timeout`](RedisPoolState::with_command_timeout)
//! (250 ms) of wall-clock time, or at once when the connection is refused. The pool says so
//! once per outage (`tracing::warn!`) and goes on as a pool of its own: cooldowns it records
//! stay local, cooldowns others record are not seen. Redis's failures are never held against
//! a member. Every [`retry_interval`](RedisPoolState::with_retry_interval) (1 s) it tries
//! Redis on a fresh connection; when Redis answers it sends the resets made meanwhile,
//! publishes every cooldown it holds (a Redis that restarted empty gets them back), and reads
//! the fleet's again.
//!
//! [`Reason`]: crate::Reason

mod clock;
mod counters;
mod script;
mod worker;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::redis::{CONNECTION_TIMEOUT, Connection, Health, Link, Target, guarded, open};

use self::clock::Clock;
use self::counters::Tally;
use crate::member::Member;
use crate::pool::Shared;

/// How long Redis remembers a reset (longer than the longest cooldown a process that missed it
/// could still hold, except a parked member's).
const RESET_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// Cooldowns and health counters shared through Redis by every process that runs the same pool: see the
/// [module docs](self) and [`PoolBuilder::with_shared`](crate::PoolBuilder::with_shared).
///
/// ```no_run
/// use tollgate_core::Secret;
/// use tollgate_pool::{Member, Pool, RedisPoolState};
///
/// # async fn demo<S: Clone>(client: S) -> Result<(), tollgate_core::BoxError> {
/// let shared = RedisPoolState::connect("redis://:password@redis.internal:6379")
///     .await?
///     .with_prefix("tollgate:pool:gpt-4o"); // one prefix per pool
/// let pool = Pool::builder()
///     .member(Member::key("openai-a", Secret::new("sk-a")), client.clone())
///     .member(Member::key("openai-b", Secret::new("sk-b")), client)
///     .with_shared(shared)
///     .build();
/// # Ok(()) }
/// ```
///
/// # Clone
///
/// Clones share the connection; each keeps its own options. Each pool built with one runs its
/// own background task, on the runtime `connect` ran on, until the pool is dropped.
#[derive(Clone)]
pub struct RedisPoolState {
    target: Target,
    conn: Link,
    /// The URL without its password.
    url: String,
    settings: Settings,
    runtime: tokio::runtime::Handle,
}

/// The options.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    prefix: String,
    command_timeout: Duration,
    sync_interval: Duration,
    retry_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: "tollgate:pool".into(),
            command_timeout: Duration::from_millis(250),
            sync_interval: Duration::from_millis(250),
            retry_interval: Duration::from_secs(1),
        }
    }
}

impl RedisPoolState {
    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`).
    ///
    /// # Errors
    ///
    /// When the URL is invalid or Redis does not answer within a second: a fleet that starts
    /// without its shared state is a configuration error, surfaced at startup. The error names
    /// the URL without its password.
    pub async fn connect(url: &str) -> Result<Self, BoxError> {
        let target = Target::parse(url)?;
        let shown = target.shown().to_owned();
        let conn = guarded(CONNECTION_TIMEOUT, open(&target))
            .await
            .map_err(|e| format!("cannot reach redis at {shown}: {e}"))?;
        Ok(Self {
            target,
            conn,
            url: shown,
            settings: Settings::default(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The keys' prefix (default `tollgate:pool`): pools with the same prefix share their
    /// members' cooldowns, by member name and key fingerprint. Give each pool of a process
    /// (each model group) its own.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// How long a Redis command may take before Redis counts as unreachable (default 250 ms).
    ///
    /// # Panics
    ///
    /// When `timeout` is zero.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "command_timeout must be positive");
        self.settings.command_timeout = timeout;
        self
    }

    /// How often the fleet's cooldowns are read (default 250 ms): the most a process may lag
    /// behind another's cooldown, beside two round trips.
    ///
    /// # Panics
    ///
    /// When `interval` is zero.
    pub fn with_sync_interval(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "sync_interval must be positive");
        self.settings.sync_interval = interval;
        self
    }

    /// How often to try Redis again, on a fresh connection, while it is unreachable (default
    /// 1 s).
    ///
    /// # Panics
    ///
    /// When `interval` is zero.
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "retry_interval must be positive");
        self.settings.retry_interval = interval;
        self
    }

    /// The keys' prefix.
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// The shared state of a pool of `members`.
    pub(crate) fn fleet(self, members: &[Member]) -> Fleet {
        let prefix = &self.settings.prefix;
        let keys = members
            .iter()
            .map(|member| {
                let id = match member.adapter.credential() {
                    Some(credential) => format!("{}:{credential}", member.name),
                    None => member.name.to_string(),
                };
                [
                    format!("{{{prefix}}}:cooldown:{id}"),
                    format!("{{{prefix}}}:reset:{id}"),
                ]
            })
            .collect();
        let counter_keys = members
            .iter()
            .map(|member| match member.adapter.credential() {
                Some(credential) => format!("{{{prefix}}}:counters:{}:{credential}", member.name),
                None => format!("{{{prefix}}}:counters:{}", member.name),
            })
            .collect();
        let n = members.len();
        Fleet {
            conn: Connection::new(self.target, self.conn),
            url: self.url,
            settings: self.settings,
            clock: Clock::new(),
            keys,
            counter_keys,
            state: Mutex::new(State {
                publish: vec![false; n],
                resets: vec![None; n],
                cleared: vec![0; n],
                sent: vec![Tally::default(); n],
                seen: vec![None; n],
            }),
            wake: Notify::new(),
            health: Health::default(),
            runtime: self.runtime,
        }
    }
}

impl fmt::Debug for RedisPoolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPoolState")
            .field("url", &self.url)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One pool's shared state: its connection, its members' keys, and what its task has to send.
pub(crate) struct Fleet {
    conn: Connection,
    url: String,
    settings: Settings,
    clock: Clock,
    /// Each member's cooldown key and reset key.
    keys: Vec<[String; 2]>,
    /// Each member's counters key.
    counter_keys: Vec<String>,
    state: Mutex<State>,
    wake: Notify,
    pub(crate) health: Health,
    runtime: tokio::runtime::Handle,
}

/// What the task has to send, and the last reset known of each member.
#[derive(Debug)]
struct State {
    /// Members whose cooldown is to be published.
    publish: Vec<bool>,
    /// Resets made here and not yet sent (wall-clock microseconds).
    resets: Vec<Option<u64>>,
    /// The last reset of each member, here or anywhere (wall-clock microseconds; 0: none).
    cleared: Vec<u64>,
    /// Each member's counts as this process last added them to the fleet's.
    sent: Vec<Tally>,
    /// The fleet's counts of each member as last read (`None`: take the next read in
    /// without moving the averages).
    seen: Vec<Option<Tally>>,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("url", &self.url)
            .field("settings", &self.settings)
            .field("degraded", &self.health.is_degraded())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the pool's background task; it ends when the pool is dropped.
    pub(crate) fn start(self: &Arc<Self>, pool: Weak<Shared>) {
        self.runtime.spawn(worker::run(pool, self.clone()));
    }

    /// `member` went out of rotation here: publish it.
    pub(crate) fn cooled(&self, member: usize) {
        self.state().publish[member] = true;
        self.wake.notify_one();
    }

    /// `member` was reset here: no cooldown that began before now holds, anywhere.
    pub(crate) fn reset(&self, member: usize) {
        let at = self.clock.wall(Instant::now());
        {
            let mut state = self.state();
            state.cleared[member] = state.cleared[member].max(at);
            state.resets[member] = Some(at);
            state.publish[member] = false;
        }
        self.wake.notify_one();
    }
}
