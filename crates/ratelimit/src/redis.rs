//! [`RedisStore`]: limit state shared through Redis by a fleet of processes that use one
//! provider key.

mod cell;
mod clock;
mod lease;
mod options;
mod reserve;
mod scope;
mod script;
mod store;
mod worker;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_core::redis::{Connection, Health, Target, guarded};
use tollgate_core::{BoxError, ScopeMode, ScopeRegistry};

use self::clock::Clock;
use self::options::Settings;
use self::scope::Leftovers;
use self::script::Change;
use crate::gcra::View;
use crate::quota::{Dimension, QuotaTable};

pub use self::reserve::RedisReserve;
pub use self::scope::RedisScope;

/// Round trips a [`RedisStore`] made, from [`RedisStore::round_trips`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundTrips {
    /// Reservations the lease could not serve: a request waited on Redis for each.
    pub reservations: u64,
    /// Releases, charges, provider counts, pauses and returned leases, sent in the background
    /// (those a reservation carried are not counted again).
    pub updates: u64,
}

/// Limit state in Redis, shared by every process that uses the same Redis and key prefix: a
/// fleet behind one provider key stays within that key's limits.
///
/// ```no_run
/// use tollgate_ratelimit::{QuotaTable, Quotas, RateLimitLayer, RedisStore};
///
/// # async fn demo() -> Result<(), tollgate_core::BoxError> {
/// let table = QuotaTable::new(Quotas::per_minute(500, 200_000));
/// let store = RedisStore::connect("redis://:password@redis.internal:6379", table)
///     .await?
///     .with_local_share(1.0 / 4.0); // four processes: a quarter each if Redis goes away
/// let layer = RateLimitLayer::from_store(store);
/// # Ok(()) }
/// ```
///
/// # Cells and time
///
/// Each limited dimension of a scope is a GCRA cell, as in [`MemoryStore`](crate::MemoryStore),
/// whose TAT lives in the Redis key `prefix:{scope}:dimension` (`tollgate:rl` by default; the
/// scope names its key by id, never by secret). A key expires one period after its TAT, so idle
/// scopes leave nothing behind. One atomic Lua script applies the changes queued for a scope,
/// then reserves every dimension of a request at once: all or nothing, refused with the
/// dimension and its wait, or never when the request exceeds a quota; its arithmetic is the
/// in-memory cells', to the nanosecond. Time is the caller's, `wall clock at an anchor +
/// tokio's elapsed time` (one anchor per process), so the machines of a fleet agree within
/// their NTP skew and paused-time tests work; Redis `TIME` is never read. The anchor follows
/// the system clock's steps (an NTP correction, a resumed virtual machine) within a second of
/// real time: once a step is seen, this process's buckets look refilled by up to the step (a
/// step forward) or emptier by it (a step back), once; reservations already granted and
/// leases keep their instants.
///
/// # Leases
///
/// A round trip reserves the request's units plus, as far as they fit at that moment, a lease
/// of [`lease_fraction`](Self::with_lease_fraction) of each quota (2 %), which this process
/// then spends with a compare-exchange: below the limit, most requests never wait on Redis.
/// Leased units are a real reservation in Redis; those not spent within
/// [`lease_hold`](Self::with_lease_hold) of the grant (1 s) go back, so a quiet process does
/// not sit on the fleet's quota. Since a leased unit may be spent up to that hold after it was
/// granted, a dimension with leases keeps a hold's worth of refill in reserve (its burst is
/// `hold × rate` smaller: 1/60 of a per-minute quota), and however the leases are spent the
/// fleet never exceeds the quota. At the limit there is nothing to lease: each grant is a round
/// trip, but a retry that Redis would surely refuse (judging by the state it last reported and
/// this process's own changes since) is refused locally. A fraction of 0 turns leases off: one
/// round trip per reservation, exactly the in-memory limits.
///
/// # Learned from refusals
///
/// A dimension no quota configures and no header reports (a provider that answers only with
/// 429s) is paced by what this process learns from those 429s, as in
/// [`MemoryStore`](crate::MemoryStore): the pace is learned from the answers this process got
/// and the 429s it met, and its requests wait on it here before they ask Redis for the rest.
/// Each 429's wait still pauses every process of the fleet, through Redis. The pace itself is
/// each process's own: with the load spread evenly each settles near its share of the hidden
/// limit, and a process that has met no 429 yet is not paced until it meets one. While Redis is
/// unreachable the pace holds as before, in the fallback that holds the rest.
///
/// # Consistency
///
/// Releases, charges, provider counts and 429 pauses never wait on Redis. A charge is taken
/// from the lease when it can; everything else is queued for its scope, in order, and sent
/// with the scope's next reservation that asks Redis, or by a background task within a few
/// milliseconds. Redis sees them that much later: meanwhile the fleet errs towards caution
/// after a refund and towards optimism after a charge, as it would anyway while a response is
/// in flight. A process's refund always reaches Redis before its next reservation. A
/// provider count is applied minus this process's unspent lease (the provider counts those
/// units as unused, Redis as taken); a pause gives the lease back first.
///
/// # When Redis is unreachable
///
/// A command fails after [`command_timeout`](Self::with_command_timeout) of wall-clock time
/// (250 ms), or at once when the connection is refused. The store says so once
/// (`tracing::warn!`) and then, fail-open (the default), limits each scope locally to
/// [`local_share`](Self::with_local_share) of its quotas, starting from that share of what
/// Redis last reported; fail-closed, it refuses with a wait of one retry interval, so requests
/// wait in line for Redis up to their max wait or deadline and then fail with
/// [`RateLimited`](tollgate_core::error::RateLimited). Changes made meanwhile stay local, and
/// those queued when Redis failed are dropped. Every
/// [`retry_interval`](Self::with_retry_interval) (1 s) it tries Redis on a fresh connection
/// and goes back to the shared limits when it answers.
///
/// The command timeout is kept by a parked blocking-pool thread rather than a tokio timer: a
/// network round trip takes real time even when tokio's clock is paused. Under a paused clock
/// that thread also keeps the clock from jumping ahead while Redis answers, so in tests a round
/// trip takes no simulated time.
///
/// # Clone
///
/// Clones share everything: the connection, the scopes and their leases, and the options (an
/// option set on one clone applies to all; set them before the first request).
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    conn: Connection,
    /// The URL without its password.
    url: String,
    clock: Clock,
    table: QuotaTable,
    settings: RwLock<Settings>,
    /// Replaced whole when an option changes (scopes are rebuilt with the new options).
    scopes: ArcSwap<ScopeRegistry<RedisScope>>,
    /// Changes of scopes let go of while they still had some: the worker sends them.
    leftovers: Arc<Leftovers>,
    health: Health,
    /// Wakes the worker when a change is queued.
    wake: Arc<Notify>,
    reservation_trips: AtomicU64,
    update_trips: AtomicU64,
}

/// The scopes of a store with `settings`. Those that hold no lease and have sent everything can
/// go: their state is in Redis.
fn scopes(
    table: &QuotaTable,
    settings: Settings,
    clock: &Clock,
    leftovers: &Arc<Leftovers>,
) -> ScopeRegistry<RedisScope> {
    let (table, epoch, leftovers) = (table.clone(), clock.instant(0), leftovers.clone());
    ScopeRegistry::new(
        ScopeMode::PerScope {
            max_scopes: settings.max_scopes,
        },
        move |scope, _| {
            RedisScope::new(
                scope,
                table.quotas_for(scope),
                &settings,
                epoch,
                leftovers.clone(),
            )
        },
        RedisScope::is_idle,
    )
}

impl RedisStore {
    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`); every scope gets its
    /// quotas from `table`.
    ///
    /// # Errors
    ///
    /// When the URL is invalid or Redis does not answer: a fleet that starts without its shared
    /// limits is a configuration error, surfaced at startup.
    pub async fn connect(url: &str, table: QuotaTable) -> Result<Self, BoxError> {
        let target = Target::parse(url)?;
        let shown = target.shown().to_owned();
        let conn = Connection::connect(target).await?;
        let wake = Arc::new(Notify::new());
        let (clock, leftovers) = (Clock::new(), Arc::new(Leftovers::new(wake.clone())));
        let scopes = scopes(&table, Settings::default(), &clock, &leftovers);
        let shared = Arc::new(Shared {
            conn,
            url: shown,
            clock,
            table,
            settings: RwLock::new(Settings::default()),
            scopes: ArcSwap::from_pointee(scopes),
            leftovers,
            health: Health::default(),
            wake: wake.clone(),
            reservation_trips: AtomicU64::new(0),
            update_trips: AtomicU64::new(0),
        });
        tokio::spawn(worker::run(Arc::downgrade(&shared), wake));
        Ok(Self { shared })
    }

    /// The quotas it gives scopes.
    pub fn table(&self) -> &QuotaTable {
        &self.shared.table
    }

    /// How many scopes are held now.
    pub fn len(&self) -> usize {
        self.shared.scopes.load().len()
    }

    /// Whether no scope is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether Redis is unreachable (limits are local until it answers again).
    pub fn is_degraded(&self) -> bool {
        self.shared.health.is_degraded()
    }

    /// Script calls made to Redis so far by this store (and its clones).
    pub fn round_trips(&self) -> RoundTrips {
        RoundTrips {
            reservations: self.shared.reservation_trips.load(Ordering::Relaxed),
            updates: self.shared.update_trips.load(Ordering::Relaxed),
        }
    }

    /// Waits until every release, charge, provider count and pause made so far has been sent
    /// to Redis (or dropped, Redis being unreachable).
    pub async fn flush(&self) {
        // Every scope: one whose changes the worker is sending has none pending, but its turn.
        for scope in self.shared.scopes_to_send(true) {
            self.shared.send(&scope).await;
        }
        self.shared.send_leftovers().await;
    }

    /// How `dimension` of `scope` stands in Redis now, for the whole fleet (this process's
    /// unspent lease counts as used): one round trip.
    ///
    /// # Errors
    ///
    /// When Redis does not answer.
    pub async fn fleet_view(
        &self,
        scope: &RedisScope,
        dimension: Dimension,
    ) -> Result<Option<View>, BoxError> {
        let Some(cell) = scope.cell(dimension) else {
            return Ok(None);
        };
        let (clock, now) = (&self.shared.clock, Instant::now());
        let frame = clock.frame(now);
        let mut conn = self.shared.conn.get();
        let timeout = self.shared.settings().command_timeout;
        let tat = guarded(timeout, script::read_tat(&mut conn, &frame, &cell.key)).await?;
        let tat = tat.map_or(0, |at| clock.local(at));
        Ok(Some(cell::view(cell, tat, clock.local(now), 0)))
    }
}

impl Shared {
    fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Queues `change` for Redis, without waiting.
    fn change(&self, scope: &RedisScope, dimension: Dimension, change: Change) {
        scope.push(dimension, change);
        self.wake.notify_one();
    }

    /// Queues a release (`sign` −1) or a charge (+1) of `units`.
    fn add(&self, scope: &RedisScope, dimension: Dimension, units: u64, sign: i64) {
        if units > 0 {
            let units = i64::try_from(units).unwrap_or(i64::MAX);
            self.change(scope, dimension, Change::Add(sign * units));
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.shared;
        f.debug_struct("RedisStore")
            .field("url", &shared.url)
            .field("table", &shared.table)
            .field("settings", &shared.settings())
            .field("scopes", &shared.scopes.load().len())
            .field("degraded", &shared.health.is_degraded())
            .finish()
    }
}
