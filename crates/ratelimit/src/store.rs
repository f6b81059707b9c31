//! Where limit state lives: [`MemoryStore`](crate::MemoryStore) in this process, or Redis for
//! a fleet (feature `redis`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tollgate_core::{RateLimitSnapshot, Scope};

use crate::gcra::View;
use crate::metrics::ScopeMetrics;
use crate::quota::Dimension;

/// Units asked of each dimension, indexed by [`Dimension`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Charges(pub(crate) [u64; 5]);

impl Charges {
    /// Nothing.
    pub const ZERO: Self = Self([0; 5]);

    /// One request of `input` and `output` tokens.
    pub const fn request(input: u64, output: u64) -> Self {
        Self([1, input.saturating_add(output), input, output, 1])
    }

    /// The units of `dimension`.
    pub const fn get(&self, dimension: Dimension) -> u64 {
        self.0[dimension.index()]
    }

    /// Only the token dimensions (reconciliation never refunds a request).
    pub const fn tokens_only(self) -> Self {
        let [_, tokens, input, output, _] = self.0;
        Self([0, tokens, input, output, 0])
    }

    /// Per dimension, what `self` has beyond `other` (zero where it has less).
    pub fn saturating_sub(self, other: Self) -> Self {
        let mut out = [0; 5];
        for (i, unit) in out.iter_mut().enumerate() {
            *unit = self.0[i].saturating_sub(other.0[i]);
        }
        Self(out)
    }

    /// Whether every dimension is zero.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 5]
    }
}

/// Why a reservation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It would have to wait longer than allowed.
    Wait {
        /// The dimension that would make it wait.
        dimension: Dimension,
        /// How long.
        wait: Duration,
    },
    /// It can never fit.
    Never {
        /// The dimension it exceeds.
        dimension: Dimension,
        /// What it asks.
        requested: u64,
        /// The most that dimension allows.
        limit: u64,
    },
}

/// What one scope keeps in this process, whichever store holds its limits: counters about its
/// estimates, and the line of requests waiting for capacity.
#[derive(Debug)]
pub struct ScopeStats {
    /// A moving average of observed output tokens, ×16 fixed point; 0 until the first answer.
    output_average: AtomicU64,
    /// A moving average of the relative error of reservations, in per-mille.
    error_permille: AtomicU64,
    /// Units of each dimension held by requests admitted and not yet settled.
    reserved: [AtomicU64; 5],
    /// One permit: the request at the head of the line holds it while it waits for capacity,
    /// the others queue for it in arrival order.
    pub(crate) head: Semaphore,
    /// Wakes the head of the line when capacity is given back before its computed time.
    pub(crate) released: Notify,
    /// The scope's metrics handles (nothing without the `metrics` feature).
    pub(crate) metrics: ScopeMetrics,
}

impl Default for ScopeStats {
    fn default() -> Self {
        Self {
            output_average: AtomicU64::new(0),
            error_permille: AtomicU64::new(0),
            reserved: Default::default(),
            head: Semaphore::new(1),
            released: Notify::new(),
            metrics: ScopeMetrics::new(),
        }
    }
}

impl ScopeStats {
    /// The output tokens to reserve for a request that sets no cap: the running average of
    /// what this scope's answers used, or `default` before any.
    pub fn output_estimate(&self, default: u64) -> u64 {
        match self.output_average.load(Ordering::Relaxed) {
            0 => default,
            fixed => fixed.div_ceil(16),
        }
    }

    /// Whether requests are waiting for capacity (a newcomer then queues behind them).
    pub fn has_waiters(&self) -> bool {
        self.head.available_permits() == 0
    }

    /// How far off reservations have been: a moving average of |reserved − used| / used.
    pub fn estimate_error(&self) -> f64 {
        self.error_permille.load(Ordering::Relaxed) as f64 / 1_000.0
    }

    /// Units of `dimension` held now by requests admitted and not yet settled (their answer,
    /// or the end of their stream, has not come back).
    pub fn reserved(&self, dimension: Dimension) -> u64 {
        self.reserved[dimension.index()].load(Ordering::Relaxed)
    }

    /// A request admitted with `charges`: they count as reserved until [`settled`](Self::settled).
    pub(crate) fn admitted(&self, charges: Charges) {
        for (cell, units) in self.reserved.iter().zip(charges.0) {
            if units != 0 {
                cell.fetch_add(units, Ordering::Relaxed);
            }
        }
    }

    /// A request admitted with `charges` is settled: they no longer count as reserved.
    pub(crate) fn settled(&self, charges: Charges) {
        for (cell, units) in self.reserved.iter().zip(charges.0) {
            if units != 0 {
                cell.fetch_sub(units, Ordering::Relaxed);
            }
        }
    }

    /// Folds in one answer: `reserved` tokens were held, `used` were used, of which `output`
    /// were output. A moving average over about eight answers.
    pub(crate) fn record(&self, reserved: u64, used: u64, output: u64) {
        let ewma = |cell: &AtomicU64, sample: u64| {
            let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample.max(1)
                } else {
                    old - old / 8 + sample / 8
                })
            });
        };
        ewma(&self.output_average, output.saturating_mul(16));
        let error = reserved.abs_diff(used).saturating_mul(1_000) / used.max(1);
        ewma(&self.error_permille, error);
    }
}

/// A store of limit state, per [`Scope`].
///
/// The layer asks it to reserve a request's charges (possibly in the future: the returned
/// instant is when the request may go), to give back what was not used, to charge what was
/// used beyond the estimate, and to take the provider's own view into account.
pub trait Store: Clone + Send + Sync + 'static {
    /// The state of one scope, looked up once per request.
    type Scope: Send + Sync + 'static;
    /// The future of a reservation.
    type Reserve: Future<Output = Result<Instant, Refusal>> + Send + 'static;

    /// Whether other processes share these limits (a fleet's store in Redis). Each process's
    /// line then asks again after a wait with a little jitter: the heads of the fleet's lines
    /// wake for the same refill, and without it the one whose clock runs a few microseconds
    /// ahead would take every unit, its replica's clients served first every time.
    const SHARED: bool = false;

    /// The state of `scope`, created with its configured quotas on first use.
    fn scope(&self, scope: &Scope, now: Instant) -> Arc<Self::Scope>;

    /// The estimate counters of a scope.
    fn stats(scope: &Self::Scope) -> &ScopeStats;

    /// Reserves `charges` on every limited dimension, all or nothing: the request may go at the
    /// returned instant, unless that is more than `max_wait` away or it can never fit.
    fn reserve(
        &self,
        scope: &Arc<Self::Scope>,
        charges: Charges,
        now: Instant,
        max_wait: Duration,
    ) -> Self::Reserve;

    /// Gives back `charges` reserved earlier.
    fn release(&self, scope: &Self::Scope, charges: Charges);

    /// Takes `charges` more, unconditionally.
    fn charge(&self, scope: &Self::Scope, charges: Charges);

    /// Tightens the scope's limits to the provider's own count (and learns a limit that was not
    /// configured, when `learn` is set).
    fn observe(&self, scope: &Self::Scope, snapshot: &RateLimitSnapshot, learn: bool, now: Instant);

    /// Holds `dimensions` back until `until`, when `charges` fit again.
    fn pause(
        &self,
        scope: &Self::Scope,
        dimensions: &[Dimension],
        until: Instant,
        charges: Charges,
    );

    /// How `dimension` stands now, if it is limited.
    fn view(&self, scope: &Self::Scope, dimension: Dimension, now: Instant) -> Option<View>;

    /// An answer of `charges` came back at `now`. A store that learns limits from refusals
    /// counts it (what the upstream admits); the default does nothing.
    fn answered(&self, scope: &Self::Scope, charges: Charges, now: Instant) {
        let _ = (scope, charges, now);
    }

    /// The provider refused a request sent at `sent_at` with a 429 on `dimensions` (naming
    /// the `window` its limit counts over, asking to wait `retry_after`). A store that learns
    /// limits from refusals learns or cuts the pace of those nobody configured and no header
    /// reported; the default does nothing (the [`pause`](Self::pause) that follows still
    /// holds).
    fn refused(
        &self,
        scope: &Self::Scope,
        dimensions: &[Dimension],
        window: Option<Duration>,
        retry_after: Option<Duration>,
        sent_at: Instant,
        now: Instant,
    ) {
        let _ = (scope, dimensions, window, retry_after, sent_at, now);
    }
}
