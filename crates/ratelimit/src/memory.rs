//! [`MemoryStore`]: limit state in this process, lock-free per decision.

use std::fmt;
use std::future::{Ready, ready};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tollgate_core::{
    DEFAULT_MAX_SCOPES, RateLimitSnapshot, RateLimitWindow, Scope, ScopeMode, ScopeRegistry,
};

use crate::gcra::{Denied, Gcra, View};
use crate::handle::RateLimitHandle;
use crate::learn::{Learner, RefusalHint};
use crate::quota::{Dimension, Quota, QuotaTable, Quotas};
use crate::store::{Charges, Refusal, ScopeStats, Store};

/// Limit state in memory: one GCRA cell per scope and dimension.
///
/// Decisions are lock-free (an atomic compare-exchange per limited dimension), and so is
/// finding a known scope's state (a [`ScopeRegistry`]). At most `max_scopes` scopes are kept
/// ([`DEFAULT_MAX_SCOPES`](crate::DEFAULT_MAX_SCOPES) by default): past
/// it, scopes whose every bucket is full again (idle long enough that forgetting them loses
/// nothing) are evicted, and when every kept scope is busy a new scope is limited by a state of
/// its own that is not kept — its limits then hold only within one request, so a client that
/// invents models cannot grow the store, but neither are those made-up scopes limited (see
/// [`ScopeMap`](tollgate_core::ScopeMap)'s bound). Its [`handle`](Self::handle) reads the
/// limits of every scope.
///
/// # Clone
///
/// Clones share the same state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Instant,
    table: QuotaTable,
    scopes: ScopeRegistry<MemoryScope>,
}

/// The state of one scope in a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryScope {
    epoch: Instant,
    dims: [OnceLock<Gcra>; 5],
    /// One bit per dimension that has a cell: decisions visit only those.
    limited: AtomicU8,
    /// Where each dimension's quota comes from ([`QuotaSource`] as a number; 0: none).
    sources: [AtomicU8; 5],
    /// Paces learned from refusals, and what they are learned from: made when a scope's
    /// requests have no quota from configuration or headers, or at its first refusal.
    learner: OnceLock<Box<Learner>>,
    /// Whether the quota gauges were set once (they are then set when a quota changes).
    quotas_reported: AtomicBool,
    stats: ScopeStats,
}

/// Where a dimension's quota comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaSource {
    /// The user configured it.
    Configured,
    /// The provider's rate-limit headers reported it.
    Headers,
    /// It was learned from the provider's refusals: a pace that moves (see the crate docs).
    Refusals,
}

impl QuotaSource {
    /// Every source, in code order.
    pub const ALL: [Self; 3] = [Self::Configured, Self::Headers, Self::Refusals];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Configured => "configured",
            Self::Headers => "headers",
            Self::Refusals => "refusals",
        }
    }

    const fn code(self) -> u8 {
        match self {
            Self::Configured => 1,
            Self::Headers => 2,
            Self::Refusals => 3,
        }
    }

    const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Configured),
            2 => Some(Self::Headers),
            3 => Some(Self::Refusals),
            _ => None,
        }
    }
}

/// One dimension's limit as it stands.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct LimitState {
    /// The dimension.
    pub dimension: Dimension,
    /// Where its quota comes from.
    pub source: QuotaSource,
    /// The quota (a learned pace, as the whole number per minute it rounds up to).
    pub quota: Quota,
    /// The quota in units a minute, exactly (a learned pace is rarely a whole number).
    pub per_minute: f64,
    /// Units that can be taken now without waiting.
    pub remaining: u64,
    /// Units held now by requests admitted and not yet settled: their answer (or the end of
    /// their stream) has not come back, so what they use is not known yet.
    pub reserved: u64,
}

/// A cell's rate in units a minute.
fn per_minute(cell: &Gcra) -> f64 {
    if cell.is_paced() {
        60e9 / cell.interval() as f64
    } else {
        let quota = cell.quota();
        quota.limit() as f64 * 60.0 / quota.period().as_secs_f64()
    }
}

impl Inner {
    /// An empty store keeping at most `max_scopes` scopes.
    fn new(epoch: Instant, table: QuotaTable, max_scopes: usize) -> Self {
        let quotas = table.clone();
        Self {
            epoch,
            table,
            // Scopes whose buckets are all full again can go: nothing is lost.
            scopes: ScopeRegistry::new(
                ScopeMode::PerScope { max_scopes },
                move |scope, _| MemoryScope::new(quotas.quotas_for(scope), epoch),
                |state| state.is_idle(Instant::now()),
            ),
        }
    }
}

impl MemoryStore {
    /// A store where every scope gets `table`'s quotas.
    pub fn new(table: QuotaTable) -> Self {
        Self {
            inner: Arc::new(Inner::new(Instant::now(), table, DEFAULT_MAX_SCOPES)),
        }
    }

    /// Keeps at most `max_scopes` scopes (at least one; idle ones are evicted to make room).
    pub fn with_max_scopes(self, max_scopes: usize) -> Self {
        let inner = Inner::new(self.inner.epoch, self.inner.table.clone(), max_scopes);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The quotas it gives scopes.
    pub fn table(&self) -> &QuotaTable {
        &self.inner.table
    }

    /// A handle that reads the limits of every scope as they stand.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle::new(self.clone())
    }

    /// The state of `scope`, if it is kept.
    pub(crate) fn find(&self, scope: &Scope) -> Option<Arc<MemoryScope>> {
        self.inner.scopes.find(scope)
    }

    /// Every kept scope and its state.
    pub(crate) fn all(&self) -> Vec<(Scope, Arc<MemoryScope>)> {
        self.inner.scopes.all()
    }

    /// How many scopes are held now.
    pub fn len(&self) -> usize {
        self.inner.scopes.len()
    }

    /// Whether no scope is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("table", &self.inner.table)
            .field("scopes", &self.len())
            .field("max_scopes", &self.inner.scopes.max_scopes())
            .finish()
    }
}

#[inline]
pub(crate) fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

impl MemoryScope {
    pub(crate) fn new(quotas: Quotas, epoch: Instant) -> Self {
        let mut limited = 0;
        let dims = Dimension::ALL.map(|dimension| {
            let cell = OnceLock::new();
            if let Some(quota) = quotas.get(dimension) {
                let _ = cell.set(Gcra::new(quota));
                limited |= 1 << dimension.index();
            }
            cell
        });
        let sources = Dimension::ALL.map(|dimension| {
            let configured = limited & (1 << dimension.index()) != 0;
            AtomicU8::new(if configured {
                QuotaSource::Configured.code()
            } else {
                0
            })
        });
        Self {
            epoch,
            dims,
            limited: AtomicU8::new(limited),
            sources,
            learner: OnceLock::new(),
            quotas_reported: AtomicBool::new(false),
            stats: ScopeStats::default(),
        }
    }

    /// Where `dimension`'s quota comes from, if it has one.
    pub fn source(&self, dimension: Dimension) -> Option<QuotaSource> {
        QuotaSource::from_code(self.sources[dimension.index()].load(Ordering::Acquire))
    }

    /// Whether a refusal on `dimension` may teach its quota: nobody configured it and no
    /// header reported it.
    fn learnable(&self, dimension: Dimension) -> bool {
        matches!(self.source(dimension), None | Some(QuotaSource::Refusals))
    }

    /// An answer of `charges` came back: counted for the paces learned from refusals, when
    /// the scope's requests have no other quota.
    pub(crate) fn answered(&self, charges: Charges, now: Instant) {
        if !self.quotas_reported.swap(true, Ordering::Relaxed) {
            for dimension in Dimension::ALL {
                self.report_quota(dimension);
            }
        }
        let learner = match self.learner.get() {
            Some(learner) => learner,
            None if self.learnable(Dimension::Requests) => {
                self.learner.get_or_init(Default::default)
            }
            None => return,
        };
        let moved = learner.answered(charges, self.nanos(now), &self.dims);
        if moved != 0 {
            for dimension in Dimension::ALL {
                if moved & (1 << dimension.index()) != 0 {
                    self.report_quota(dimension);
                }
            }
        }
    }

    /// Sets `dimension`'s quota gauge (with the `metrics` feature).
    fn report_quota(&self, dimension: Dimension) {
        if let (Some(cell), Some(source)) =
            (self.dims[dimension.index()].get(), self.source(dimension))
        {
            self.stats
                .metrics
                .quota(dimension, source, per_minute(cell));
        }
    }

    /// Every limited dimension as it stands at `now`.
    pub fn limits(&self, now: Instant) -> Vec<LimitState> {
        let at = self.nanos(now);
        Dimension::ALL
            .into_iter()
            .filter_map(|dimension| {
                let cell = self.dims[dimension.index()].get()?;
                let view = cell.view(at);
                Some(LimitState {
                    dimension,
                    source: self.source(dimension)?,
                    quota: view.quota,
                    per_minute: per_minute(cell),
                    remaining: view.remaining,
                    reserved: self.stats.reserved(dimension),
                })
            })
            .collect()
    }

    /// A 429 the pace did not prevent, on `dimensions`: learns or cuts their paces.
    pub(crate) fn refused(&self, dimensions: &[Dimension], hint: RefusalHint, now: Instant) {
        let learner = self.learner.get_or_init(Default::default);
        let now = self.nanos(now);
        for &dimension in dimensions {
            if dimension == Dimension::RequestsPerDay || !self.learnable(dimension) {
                continue;
            }
            let index = dimension.index();
            if learner.refused(dimension, &self.dims[index], hint, now)
                && self.dims[index].get().is_some_and(Gcra::is_paced)
            {
                self.sources[index].store(QuotaSource::Refusals.code(), Ordering::Release);
                self.limited.fetch_or(1 << index, Ordering::Release);
                self.report_quota(dimension);
            }
        }
    }

    /// When the refused request was sent, in this scope's time.
    pub(crate) fn nanos_at(&self, at: Instant) -> u64 {
        self.nanos(at)
    }

    #[inline]
    fn nanos(&self, at: Instant) -> u64 {
        nanos_since(self.epoch, at)
    }

    #[inline]
    fn cells(&self) -> impl Iterator<Item = (Dimension, &Gcra)> {
        let mut mask = self.limited.load(Ordering::Acquire);
        std::iter::from_fn(move || {
            while mask != 0 {
                let index = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if let Some(cell) = self.dims[index].get() {
                    return Some((Dimension::ALL[index], cell));
                }
            }
            None
        })
    }

    /// Whether every bucket is full again at `now`: forgetting the scope loses nothing.
    fn is_idle(&self, now: Instant) -> bool {
        let now = self.nanos(now);
        self.cells()
            .all(|(_, cell)| cell.view(now).reset_nanos == 0)
    }

    #[inline]
    pub(crate) fn reserve(
        &self,
        charges: Charges,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Instant, Refusal> {
        // A charge no wait can fit is refused now, before any dimension makes it wait in line.
        for (dimension, cell) in self.cells() {
            let units = charges.get(dimension);
            if cell.never(units) {
                return Err(Refusal::Never {
                    dimension,
                    requested: units,
                    limit: cell.quota().limit(),
                });
            }
        }
        let at = self.nanos(now);
        let max_wait_nanos = u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX);
        let mut departure = at;
        for (i, (dimension, cell)) in self.cells().enumerate() {
            let units = charges.get(dimension);
            if units == 0 {
                continue;
            }
            match cell.reserve(units, at, max_wait_nanos) {
                Ok(go) => {
                    if go > at
                        && cell.is_paced()
                        && let Some(learner) = self.learner.get()
                    {
                        learner.waited(dimension.index());
                    }
                    departure = departure.max(go);
                }
                Err(denied) => {
                    if cell.is_paced()
                        && let Some(learner) = self.learner.get()
                    {
                        // Demand is above the pace: worth probing higher.
                        learner.waited(dimension.index());
                    }
                    // All or nothing: give back what the earlier dimensions took.
                    for (dimension, cell) in self.cells().take(i) {
                        cell.release(charges.get(dimension));
                    }
                    return Err(match denied {
                        Denied::Wait(wait) => Refusal::Wait {
                            dimension,
                            wait: Duration::from_nanos(wait),
                        },
                        Denied::Never => Refusal::Never {
                            dimension,
                            requested: units,
                            limit: cell.quota().limit(),
                        },
                    });
                }
            }
        }
        if departure == at {
            return Ok(now);
        }
        Ok(self.epoch + Duration::from_nanos(departure))
    }

    pub(crate) fn release(&self, charges: Charges) {
        for (dimension, cell) in self.cells() {
            cell.release(charges.get(dimension));
        }
    }

    pub(crate) fn charge(&self, charges: Charges) {
        for (dimension, cell) in self.cells() {
            cell.charge(charges.get(dimension));
        }
    }

    pub(crate) fn observe(&self, snapshot: &RateLimitSnapshot, learn: bool, now: Instant) {
        let at = self.nanos(snapshot.sent_at.unwrap_or(now));
        let windows = [
            (Dimension::Requests, snapshot.requests),
            (Dimension::Tokens, snapshot.tokens),
            (Dimension::InputTokens, snapshot.input_tokens),
            (Dimension::OutputTokens, snapshot.output_tokens),
        ];
        for (dimension, window) in windows {
            let Some(window) = window else { continue };
            let index = dimension.index();
            let cell = &self.dims[index];
            if learn
                && self.learnable(dimension)
                && let Some(quota) = learned(dimension, &window)
            {
                // A quota the provider reports wins over a pace learned from its refusals.
                match cell.get() {
                    Some(paced) if quota.period() == paced.quota().period() => {
                        paced.set_quota(quota);
                    }
                    Some(_) => {}
                    None => {
                        let _ = cell.set(Gcra::new(quota));
                    }
                }
                if cell.get().is_some_and(|c| !c.is_paced())
                    && self.source(dimension) != Some(QuotaSource::Headers)
                {
                    self.sources[index].store(QuotaSource::Headers.code(), Ordering::Release);
                    self.limited.fetch_or(1 << index, Ordering::Release);
                    self.report_quota(dimension);
                }
            }
            if let (Some(cell), Some(remaining)) = (cell.get(), window.remaining) {
                // A window of another period (Groq's requests per day) says nothing about
                // this per-minute bucket.
                if window.period.is_none_or(|p| p == cell.quota().period()) {
                    cell.tighten(remaining, at);
                }
            }
        }
    }

    pub(crate) fn pause(&self, dimensions: &[Dimension], until: Instant, charges: Charges) {
        let until = self.nanos(until);
        for dimension in dimensions {
            if let Some(cell) = self.dims[dimension.index()].get() {
                cell.pause_until(until, charges.get(*dimension));
            }
        }
    }

    pub(crate) fn view(&self, dimension: Dimension, now: Instant) -> Option<View> {
        let now = self.nanos(now);
        self.dims[dimension.index()]
            .get()
            .map(|cell| cell.view(now))
    }

    pub(crate) fn stats(&self) -> &ScopeStats {
        &self.stats
    }
}

/// The quota a provider's header reports for a dimension nobody configured.
fn learned(dimension: Dimension, window: &RateLimitWindow) -> Option<Quota> {
    let limit = std::num::NonZeroU64::new(window.limit?)?;
    let period = window.period.unwrap_or(Duration::from_secs(60));
    (dimension != Dimension::RequestsPerDay).then(|| Quota::new(limit, period))
}

impl Store for MemoryStore {
    type Scope = MemoryScope;
    type Reserve = Ready<Result<Instant, Refusal>>;

    fn scope(&self, scope: &Scope, now: Instant) -> Arc<MemoryScope> {
        let _ = now;
        self.inner.scopes.get(scope)
    }

    fn stats(scope: &MemoryScope) -> &ScopeStats {
        scope.stats()
    }

    fn reserve(
        &self,
        scope: &Arc<MemoryScope>,
        charges: Charges,
        now: Instant,
        max_wait: Duration,
    ) -> Self::Reserve {
        ready(scope.reserve(charges, now, max_wait))
    }

    fn release(&self, scope: &MemoryScope, charges: Charges) {
        scope.release(charges);
    }

    fn charge(&self, scope: &MemoryScope, charges: Charges) {
        scope.charge(charges);
    }

    fn observe(
        &self,
        scope: &MemoryScope,
        snapshot: &RateLimitSnapshot,
        learn: bool,
        now: Instant,
    ) {
        scope.observe(snapshot, learn, now);
    }

    fn pause(
        &self,
        scope: &MemoryScope,
        dimensions: &[Dimension],
        until: Instant,
        charges: Charges,
    ) {
        scope.pause(dimensions, until, charges);
    }

    fn view(&self, scope: &MemoryScope, dimension: Dimension, now: Instant) -> Option<View> {
        scope.view(dimension, now)
    }

    fn answered(&self, scope: &MemoryScope, charges: Charges, now: Instant) {
        scope.answered(charges, now);
    }

    fn refused(
        &self,
        scope: &MemoryScope,
        dimensions: &[Dimension],
        window: Option<Duration>,
        retry_after: Option<Duration>,
        sent_at: Instant,
        now: Instant,
    ) {
        let hint = RefusalHint {
            window,
            retry_after,
            sent_at: scope.nanos_at(sent_at),
        };
        scope.refused(dimensions, hint, now);
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::Provider;

    use super::*;

    fn scope(model: &str) -> Scope {
        Scope::new(Provider::OpenAi).with_model(Some(model.into()))
    }

    #[tokio::test(start_paused = true)]
    async fn idle_scopes_are_forgotten_busy_ones_kept() {
        let store = MemoryStore::new(QuotaTable::new(Quotas::per_minute(60, 0))).with_max_scopes(2);
        let now = Instant::now();
        let busy = store.scope(&scope("a"), now);
        assert!(
            busy.reserve(Charges::request(0, 0), now, Duration::ZERO)
                .is_ok()
        );
        drop(busy);
        let _idle = store.scope(&scope("b"), now);
        drop(_idle);
        // "a" has a request in its bucket: it stays; "b" is full again: it goes.
        let _c = store.scope(&scope("c"), now);
        assert_eq!(store.len(), 2);
        let a = store.scope(&scope("a"), now);
        assert_eq!(
            a.view(Dimension::Requests, now).unwrap().remaining,
            59,
            "a's state survived"
        );
        // A minute later every bucket is full: all are idle and can go.
        tokio::time::advance(Duration::from_secs(60)).await;
        drop(a);
        let _d = store.scope(&scope("d"), Instant::now());
        assert!(store.len() <= 2, "{}", store.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_full_of_busy_scopes_does_not_grow() {
        let store = MemoryStore::new(QuotaTable::new(Quotas::per_minute(60, 0))).with_max_scopes(2);
        let now = Instant::now();
        for model in ["a", "b"] {
            let busy = store.scope(&scope(model), now);
            assert!(
                busy.reserve(Charges::request(0, 0), now, Duration::ZERO)
                    .is_ok()
            );
        }
        for n in 0..100 {
            let made_up = store.scope(&scope(&format!("made-up-{n}")), now);
            // A usable state, not kept.
            assert!(
                made_up
                    .reserve(Charges::request(0, 0), now, Duration::ZERO)
                    .is_ok()
            );
            assert_eq!(store.len(), 2);
        }
        let a = store.scope(&scope("a"), now);
        assert_eq!(a.view(Dimension::Requests, now).unwrap().remaining, 59);
    }

    #[test]
    fn learned_limits_need_a_limit_and_a_per_minute_window() {
        let window = RateLimitWindow {
            limit: Some(500),
            remaining: Some(10),
            reset: None,
            period: None,
        };
        assert_eq!(
            learned(Dimension::Requests, &window).map(|q| q.limit()),
            Some(500)
        );
        let none = RateLimitWindow {
            limit: None,
            ..window
        };
        assert_eq!(learned(Dimension::Tokens, &none), None);
    }
}
