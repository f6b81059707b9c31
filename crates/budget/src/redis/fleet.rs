//! One layer's books in Redis: reserving a call (a round trip), settling it (queued, sent by
//! the background task), the local books kept while Redis is unreachable, and the snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::UNIX_EPOCH;

use tokio::sync::Notify;
use tollgate_core::{BoxError, Provider};

use super::script::{self, Call, Group, Keys, Seen};
use super::worker::{self, guarded};
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
const MAX_UNSENT_DROPS: usize = 100_000;

/// Most settled reservations one script call gives back.
const MAX_DROPS_PER_CALL: usize = 1_024;

/// The books of one layer, in Redis.
pub(crate) struct Fleet {
    pub(super) link: Arc<Link>,
    budgets: Arc<Budgets>,
    keys: Vec<Keys>,
    /// Marks nothing: the marker key of a call that is not a batch.
    no_batch: String,
    books: Mutex<Books>,
    wake: Arc<Notify>,
    next_id: AtomicU64,
    /// One sender at a time, so that a batch is sent in order.
    turn: tokio::sync::Mutex<()>,
}

/// What Redis said of a budget, and of which slots.
#[derive(Clone, Debug, Default)]
struct View {
    seen: Seen,
    slots: Vec<i64>,
}

/// Settlements sent together, applied once (its marker says so) even if sent again.
#[derive(Clone, Debug)]
struct Batch {
    seq: u64,
    adds: Vec<((usize, i64), Spend)>,
    drops: Vec<(String, Vec<usize>)>,
}

#[derive(Debug, Default)]
struct Books {
    views: Vec<View>,
    warned: Vec<bool>,
    /// Settled spend not sent yet, per (budget, slot).
    unsent: BTreeMap<(usize, i64), Spend>,
    /// Settled reservations not given back in Redis yet.
    drops: Vec<(String, Vec<usize>)>,
    /// A batch sent without an answer: sent again, as is, until Redis takes it.
    in_flight: Option<Batch>,
    next_batch: u64,
    /// The reservations of calls in flight, renewed while they run.
    live: HashMap<String, Vec<usize>>,
    /// The outage the local books were started for, and their limits.
    local_outage: u64,
    local: Vec<Limits>,
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
    fleet: Arc<Fleet>,
    id: Option<String>,
}

fn wall_ms(budgets: &Budgets) -> i64 {
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

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Budget `index`'s part of a call at `now`: its slots and limits.
    fn group(&self, index: usize, now: i64) -> Group<'_> {
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
    fn group_in<'g, 'a: 'g>(
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
    fn saw(&self, books: &mut Books, indices: &[usize], groups: &[Group<'_>], seen: &[Seen]) {
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
        let mut conn = self.link.conn();
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
                let settings = self.link.settings();
                self.link
                    .health
                    .failed(&*error, settings.retry_interval, settings.fail_open);
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
        let outage = self.link.health.outage();
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

    /// Whether settlements wait to be sent.
    pub(super) fn has_unsent(&self) -> bool {
        let books = self.books();
        !books.unsent.is_empty() || !books.drops.is_empty() || books.in_flight.is_some()
    }

    /// Sends the settlements queued (`renew`: and renews the reservations of calls in flight,
    /// and reads every budget; `restore`: and gives a Redis that lost its keys the spend last
    /// seen). Whether Redis took them.
    pub(crate) async fn sync(&self, renew: bool, restore: bool) -> Result<(), BoxError> {
        let _turn = self.turn.lock().await;
        let (now, now_ms, settings) = (
            self.budgets.now(),
            wall_ms(&self.budgets),
            self.link.settings(),
        );
        let (batch, renews, floors) = {
            let mut books = self.books();
            if books.in_flight.is_none() && (!books.unsent.is_empty() || !books.drops.is_empty()) {
                let seq = books.next_batch;
                books.next_batch += 1;
                let take = books.drops.len().min(MAX_DROPS_PER_CALL);
                let batch = Batch {
                    seq,
                    adds: std::mem::take(&mut books.unsent).into_iter().collect(),
                    drops: books.drops.drain(..take).collect(),
                };
                books.in_flight = Some(batch);
            }
            let renews: Vec<(String, Vec<usize>)> = if renew {
                books
                    .live
                    .iter()
                    .map(|(id, a)| (id.clone(), a.clone()))
                    .collect()
            } else {
                Vec::new()
            };
            let floors: Vec<Spend> = books
                .views
                .iter()
                .enumerate()
                .map(|(index, view)| {
                    let window = self.budgets.budgets[index].window;
                    let current = view.slots.last() == Some(&window.slot_at(now));
                    if restore && current {
                        view.seen.spent
                    } else {
                        Spend::ZERO
                    }
                })
                .collect();
            (books.in_flight.clone(), renews, floors)
        };
        let mut groups: BTreeMap<usize, Group<'_>> = BTreeMap::new();
        if renew || restore {
            for index in 0..self.budgets.budgets.len() {
                groups.insert(index, self.group(index, now));
            }
        }
        if let Some(batch) = &batch {
            for &((index, slot), spend) in &batch.adds {
                let g = self.group_in(&mut groups, index, now);
                // Spend of a slot that no longer counts is not sent.
                if let Some(at) = g.slots.iter().position(|&(s, _)| s == slot) {
                    g.adds.push((at, spend));
                }
            }
            for (id, applied) in &batch.drops {
                for &index in applied {
                    self.group_in(&mut groups, index, now)
                        .drops
                        .push(id.clone());
                }
            }
        }
        for (id, applied) in &renews {
            for &index in applied {
                self.group_in(&mut groups, index, now)
                    .renews
                    .push(id.clone());
            }
        }
        for (index, g) in &mut groups {
            g.floor = floors[*index];
        }
        let marker = batch
            .as_ref()
            .map(|b| format!("{}:{}:{}", self.no_batch, self.link.process, b.seq));
        let (indices, groups): (Vec<usize>, Vec<Group<'_>>) = groups.into_iter().unzip();
        let call = Call {
            now_ms,
            hold_until_ms: now_ms.saturating_add(settings.hold.as_millis() as i64),
            id: None,
            ttl_ms: 2 * settings.hold.as_millis() as u64,
            marker: marker.as_deref().unwrap_or(&self.no_batch),
            batch: batch.is_some(),
            groups,
        };
        let mut conn = self.link.conn();
        match guarded(settings.command_timeout, script::run(&mut conn, &call)).await {
            Ok(reply) => {
                let mut books = self.books();
                if batch.is_some() {
                    books.in_flight = None;
                }
                self.saw(&mut books, &indices, &call.groups, &reply.seen);
                Ok(())
            }
            Err(error) => {
                self.link
                    .health
                    .failed(&*error, settings.retry_interval, settings.fail_open);
                Err(error)
            }
        }
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

impl Books {
    fn push_drop(&mut self, id: String, applied: Vec<usize>) {
        if self.drops.len() < MAX_UNSENT_DROPS {
            self.drops.push((id, applied));
        } else {
            tracing::debug!("too many reservations to give back: this one is left to expire");
        }
    }

    /// Budget `index`'s settled spend not in Redis yet.
    fn unsent_of(&self, index: usize) -> Spend {
        self.unsent_since(index, i64::MIN)
    }

    /// Budget `index`'s settled spend not in Redis yet, in slots from `from`.
    fn unsent_since(&self, index: usize, from: i64) -> Spend {
        let queued = self.unsent.range((index, from)..(index + 1, i64::MIN));
        let in_flight = self
            .in_flight
            .iter()
            .flat_map(|b| &b.adds)
            .filter(|((i, slot), _)| *i == index && *slot >= from);
        queued
            .chain(in_flight.map(|(k, v)| (k, v)))
            .fold(Spend::ZERO, |sum, (_, s)| sum.plus(*s))
    }
}

impl Hold {
    /// Settles the reservation of `worst` in the budgets at `applied`: given back (`cost`
    /// none) or replaced by `cost`.
    pub(crate) fn settle(self, applied: &[usize], worst: Spend, cost: Option<Spend>) {
        let fleet = self.fleet;
        let budgets = &fleet.budgets;
        let now = budgets.now();
        let mut books = fleet.books();
        match self.id {
            Some(id) => {
                books.live.remove(&id);
                books.push_drop(id, applied.to_vec());
            }
            None => {
                for &index in applied {
                    let budget = &budgets.budgets[index];
                    let mut ledger = budget.ledger();
                    match cost {
                        None => ledger.release(worst),
                        Some(cost) => {
                            ledger.settle(worst, cost, budget.window, now);
                        }
                    }
                }
            }
        }
        if let Some(cost) = cost.filter(|&c| c != Spend::ZERO) {
            for &index in applied {
                let slot = budgets.budgets[index].window.slot_at(now);
                let entry = books.unsent.entry((index, slot)).or_default();
                *entry = entry.plus(cost);
            }
        }
        for &index in applied {
            let budget = &budgets.budgets[index];
            let seen = books.views[index].seen;
            let spent = seen.spent.plus(books.unsent_of(index));
            let mut warned = books.warned[index];
            budget.soft_threshold(spent, &mut warned);
            books.warned[index] = warned;
            budget.report_taken(spent.plus(seen.reserved));
        }
        drop(books);
        fleet.wake.notify_one();
    }
}
