//! One layer's books in Redis: reserving a call (a round trip), the local books kept while
//! Redis is unreachable, and the snapshot. Settling is in [`settle`](super::settle).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::UNIX_EPOCH;

use tokio::sync::Notify;
use tollgate_core::redis::guarded;
use tollgate_core::{BoxError, Provider};

use super::script::{self, Call, Group, Keys, Seen};
use super::worker;
use super::{Link, RedisBooks};
use crate::budgets::{BudgetSnapshot, Budgets};
use crate::cost::CallCost;
use crate::error::{BudgetExceeded, BudgetUnavailable};
use crate::ledger::{Amount, Ledger, Limits, Spend};
use crate::metrics;
use crate::price::Price;
use crate::reservation::Reservation;
use crate::window::{Window, from_unix_secs};

/// Most settled reservations queued to be given back while Redis is unreachable; past it
/// they are left to expire.
pub(super) const MAX_UNSENT_DROPS: usize = 100_000;

/// Most settled reservations one script call gives back.
pub(super) const MAX_DROPS_PER_CALL: usize = 1_024;

/// The books of one layer, in Redis.
pub(crate) struct Fleet {
    pub(super) link: Arc<Link>,
    pub(super) budgets: Arc<Budgets>,
    keys: Vec<Keys>,
    /// Marks nothing: the marker key of a call that is not a batch.
    pub(super) no_batch: String,
    books: Mutex<Books>,
    pub(super) wake: Arc<Notify>,
    next_id: AtomicU64,
    /// One sender at a time, so that a batch is sent in order.
    pub(super) turn: tokio::sync::Mutex<()>,
}

/// What Redis said of a budget, and of which slots.
#[derive(Clone, Debug, Default)]
pub(super) struct View {
    pub(super) seen: Seen,
    pub(super) slots: Vec<i64>,
}

/// Settlements sent together, applied once (its marker says so) even if sent again.
#[derive(Clone, Debug)]
pub(super) struct Batch {
    pub(super) seq: u64,
    pub(super) adds: Vec<((usize, i64), Spend)>,
    pub(super) drops: Vec<(String, Vec<usize>)>,
}

#[derive(Debug, Default)]
pub(super) struct Books {
    pub(super) views: Vec<View>,
    pub(super) warned: Vec<bool>,
    /// Settled spend not sent yet, per (budget, slot).
    pub(super) unsent: BTreeMap<(usize, i64), Spend>,
    /// Settled reservations not given back in Redis yet.
    pub(super) drops: Vec<(String, Vec<usize>)>,
    /// A batch sent without an answer: sent again, as is, until Redis takes it.
    pub(super) in_flight: Option<Batch>,
    pub(super) next_batch: u64,
    /// The reservations of calls in flight, renewed while they run.
    pub(super) live: HashMap<String, Vec<usize>>,
    /// The outage the local books were started for, and their limits.
    pub(super) local_outage: u64,
    pub(super) local: Vec<Limits>,
}

/// A call about to be reserved: its worst case and what its reservation records.
pub(crate) struct Plan {
    pub(crate) applied: Vec<usize>,
    pub(crate) worst: Spend,
    pub(crate) price: Price,
    pub(crate) provider: Provider,
    pub(crate) model: Option<Arc<str>>,
    pub(crate) tenant_label: String,
}

/// Where a call's reservation is held: in Redis under an id, or in the local books (Redis
/// was unreachable when the call was reserved).
pub(crate) struct Hold {
    pub(super) fleet: Arc<Fleet>,
    pub(super) id: Option<String>,
}

pub(super) fn wall_ms(budgets: &Budgets) -> i64 {
    budgets
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Fleet {
    /// The books of `budgets` in Redis through `books`; starts their background task.
    pub(crate) fn start(books: &RedisBooks, budgets: Arc<Budgets>) -> Arc<Self> {
        let prefix = books.link.settings().prefix;
        let n = budgets.budgets.len();
        let fleet = Arc::new(Self {
            link: books.link.clone(),
            keys: budgets
                .budgets
                .iter()
                .map(|b| Keys::new(&prefix, &b.name))
                .collect(),
            no_batch: format!("{{{prefix}}}:batch"),
            budgets,
            books: Mutex::new(Books {
                views: vec![View::default(); n],
                warned: vec![false; n],
                ..Books::default()
            }),
            wake: Arc::new(Notify::new()),
            next_id: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
        });
        books
            .link
            .runtime
            .spawn(worker::run(Arc::downgrade(&fleet), fleet.wake.clone()));
        fleet
    }

    pub(super) fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Budget `index`'s part of a call at `now`: its slots and limits.
    pub(super) fn group(&self, index: usize, now: i64) -> Group<'_> {
        let budget = &self.budgets.budgets[index];
        let slots = budget
            .window
            .counted_slots(now)
            .into_iter()
            // A minute past its end, for clocks a little behind Redis's.
            .map(|slot| (slot, budget.window.slot_expires(slot) + 60))
            .collect();
        Group::new(&self.keys[index], slots, budget.limits)
    }

    /// Budget `index`'s group in `groups`, added if missing.
    pub(super) fn group_in<'g, 'a: 'g>(
        &'a self,
        groups: &'g mut BTreeMap<usize, Group<'a>>,
        index: usize,
        now: i64,
    ) -> &'g mut Group<'a> {
        groups
            .entry(index)
            .or_insert_with(|| self.group(index, now))
    }

    /// Records what Redis said of the budgets at `indices`.
    pub(super) fn saw(
        &self,
        books: &mut Books,
        indices: &[usize],
        groups: &[Group<'_>],
        seen: &[Seen],
    ) {
        for ((&index, group), seen) in indices.iter().zip(groups).zip(seen) {
            books.views[index] = View {
                seen: *seen,
                slots: group.slots.iter().map(|&(slot, _)| slot).collect(),
            };
            self.budgets.budgets[index].report_taken(seen.spent.plus(seen.reserved));
        }
    }

    /// Reserves `plan`'s worst case in every budget it applies to: in Redis, or locally while
    /// Redis is unreachable.
    pub(crate) async fn reserve(self: Arc<Self>, plan: Plan) -> Result<Reservation, BoxError> {
        if plan.applied.is_empty() {
            return Ok(self.reservation(plan, None));
        }
        if self.link.health.is_degraded() {
            return self.reserve_locally(plan, None);
        }
        let id = format!(
            "{}:{}",
            self.link.process,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let (now, now_ms, settings) = (
            self.budgets.now(),
            wall_ms(&self.budgets),
            self.link.settings(),
        );
        let groups: Vec<Group<'_>> = plan
            .applied
            .iter()
            .map(|&i| Group {
                need: plan.worst,
                ..self.group(i, now)
            })
            .collect();
        let call = Call {
            now_ms,
            hold_until_ms: now_ms.saturating_add(settings.hold.as_millis() as i64),
            id: Some(&id),
            ttl_ms: 2 * settings.hold.as_millis() as u64,
            marker: &self.no_batch,
            batch: false,
            groups,
        };
        let mut conn = self.link.conn.get();
        match guarded(settings.command_timeout, script::run(&mut conn, &call)).await {
            Ok(reply) => {
                let mut books = self.books();
                self.saw(&mut books, &plan.applied, &call.groups, &reply.seen);
                if let Some(g) = reply.refused {
                    drop(books);
                    let index = plan.applied[g];
                    let budget = &self.budgets.budgets[index];
                    metrics::refused(&budget.name);
                    tracing::debug!(budget = %budget.name, "call refused: over budget");
                    return Err(self.exceeded(
                        index,
                        &call.groups[g],
                        reply.seen[g],
                        plan.worst,
                        now,
                    ));
                }
                books.live.insert(id.clone(), plan.applied.clone());
                drop(books);
                Ok(self.reservation(plan, Some(id)))
            }
            Err(error) => {
                // Redis may apply it after all: it is given back when Redis answers.
                self.books().push_drop(id, plan.applied.clone());
                self.link.failed(&*error);
                self.reserve_locally(plan, Some(error))
            }
        }
    }

    fn reservation(self: Arc<Self>, plan: Plan, id: Option<String>) -> Reservation {
        Reservation::new(
            self.budgets.clone(),
            plan.applied,
            plan.worst,
            CallCost::new(plan.worst, plan.price),
            plan.provider,
            plan.model,
            plan.tenant_label,
        )
        .held_in(Hold { fleet: self, id })
    }

    /// The refusal of budget `index`, from what Redis said of it.
    fn exceeded(
        &self,
        index: usize,
        group: &Group<'_>,
        seen: Seen,
        need: Spend,
        now: i64,
    ) -> BoxError {
        let budget = &self.budgets.budgets[index];
        let over_usd = budget
            .limits
            .usd
            .is_some_and(|limit| seen.spent.plus(seen.reserved).plus(need).usd > limit);
        let (limit, spent, reserved, requested) = match (over_usd, budget.limits) {
            (
                true,
                Limits {
                    usd: Some(limit), ..
                },
            ) => (
                Amount::Usd(limit),
                Amount::Usd(seen.spent.usd),
                Amount::Usd(seen.reserved.usd),
                Amount::Usd(need.usd),
            ),
            (_, limits) => (
                Amount::Tokens(limits.tokens.unwrap_or(0)),
                Amount::Tokens(seen.spent.tokens),
                Amount::Tokens(seen.reserved.tokens),
                Amount::Tokens(need.tokens),
            ),
        };
        let resets_at = match budget.window {
            Window::Rolling(_) => seen
                .oldest
                .map_or(now, |i| budget.window.slot_expires(group.slots[i].0)),
            window => window.slot_expires(window.slot_at(now)),
        };
        Box::new(BudgetExceeded {
            budget: budget.name.clone(),
            scope: budget.scope.clone(),
            window: budget.window,
            limit,
            spent,
            reserved,
            requested,
            resets_at: from_unix_secs(resets_at),
        })
    }

    /// Reserves `plan` in this process's books, within its local share (fail-open), or
    /// refuses it (fail-closed).
    fn reserve_locally(
        self: Arc<Self>,
        plan: Plan,
        error: Option<BoxError>,
    ) -> Result<Reservation, BoxError> {
        let settings = self.link.settings();
        if !settings.fail_open {
            let source =
                error.unwrap_or_else(|| "redis unreachable since an earlier command".into());
            return Err(Box::new(BudgetUnavailable {
                url: self.link.url.clone(),
                retry_after: settings.retry_interval,
                source,
            }));
        }
        let now = self.budgets.now();
        let local = self.local_limits(settings.share_ppm());
        for (n, &index) in plan.applied.iter().enumerate() {
            let budget = &self.budgets.budgets[index];
            let mut ledger = budget.ledger();
            if let Err(short) = ledger.try_reserve(local[index], budget.window, plan.worst, now) {
                drop(ledger);
                for &taken in &plan.applied[..n] {
                    self.budgets.budgets[taken].ledger().release(plan.worst);
                }
                metrics::refused(&budget.name);
                return Err(Box::new(BudgetExceeded {
                    budget: budget.name.clone(),
                    scope: budget.scope.clone(),
                    window: budget.window,
                    limit: short.limit,
                    spent: short.spent,
                    reserved: short.reserved,
                    requested: short.requested,
                    resets_at: from_unix_secs(short.resets_at),
                }));
            }
        }
        Ok(self.reservation(plan, None))
    }

    /// The local books' limits for this outage: `share` (ppm) of what was left of each
    /// budget when Redis last answered. The first call of an outage starts them.
    fn local_limits(&self, share: u32) -> Vec<Limits> {
        let outage = self.link.health.outages();
        let mut books = self.books();
        if books.local_outage != outage || books.local.is_empty() {
            let mut local = Vec::with_capacity(self.budgets.budgets.len());
            for (index, budget) in self.budgets.budgets.iter().enumerate() {
                let seen = books.views[index].seen;
                let taken = seen.spent.plus(seen.reserved).plus(books.unsent_of(index));
                let left = |limit: u64, taken: u64| {
                    (u128::from(limit.saturating_sub(taken)) * u128::from(share) / 1_000_000) as u64
                };
                local.push(Limits {
                    usd: budget
                        .limits
                        .usd
                        .map(|l| crate::Usd::from_picos(left(l.picos(), taken.usd.picos()))),
                    tokens: budget.limits.tokens.map(|l| left(l, taken.tokens)),
                });
                *budget.ledger() = Ledger::default();
            }
            books.local = local;
            books.local_outage = outage;
        }
        books.local.clone()
    }

    /// Every budget as the fleet's books stand, as this process last heard from Redis, with
    /// its own settlements not sent yet (and, while Redis is unreachable, its local books).
    pub(crate) fn snapshot(&self) -> Vec<BudgetSnapshot> {
        let now = self.budgets.now();
        let books = self.books();
        let degraded = self.link.health.is_degraded();
        self.budgets
            .budgets
            .iter()
            .enumerate()
            .map(|(index, budget)| {
                let view = &books.views[index];
                let window = budget.window;
                let from = window.counted_from(now);
                let current = match window {
                    Window::Rolling(_) => true,
                    _ => view.slots.last() == Some(&window.slot_at(now)),
                };
                let mut spent = if current {
                    view.seen.spent
                } else {
                    Spend::ZERO
                };
                spent = spent.plus(books.unsent_since(index, from));
                let mut reserved = view.seen.reserved;
                if degraded {
                    reserved = reserved.plus(budget.ledger().reserved());
                }
                let resets_at = match window {
                    Window::Rolling(_) => view
                        .seen
                        .oldest
                        .and_then(|i| view.slots.get(i))
                        .map_or(now, |&slot| window.slot_expires(slot)),
                    _ => window.slot_expires(window.slot_at(now)),
                };
                BudgetSnapshot {
                    name: budget.name.clone(),
                    scope: budget.scope.clone(),
                    window,
                    limits: budget.limits,
                    spent,
                    reserved,
                    resets_at: from_unix_secs(resets_at),
                }
            })
            .collect()
    }
}
