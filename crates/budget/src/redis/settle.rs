//! Settling a call in a fleet's books: the settlement is queued (the call's task never waits
//! on Redis) and the background task sends the queue in batches, each applied once, with the
//! renewals of the reservations of calls still running.

use std::collections::BTreeMap;

use tollgate_core::BoxError;
use tollgate_core::redis::guarded;

use super::fleet::{Batch, Books, Fleet, Hold, MAX_DROPS_PER_CALL, MAX_UNSENT_DROPS, wall_ms};
use super::script::{self, Call, Group};
use crate::ledger::Spend;

impl Fleet {
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
        let mut conn = self.link.conn.get();
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
                self.link.failed(&*error);
                Err(error)
            }
        }
    }
}

impl Books {
    pub(super) fn push_drop(&mut self, id: String, applied: Vec<usize>) {
        if self.drops.len() < MAX_UNSENT_DROPS {
            self.drops.push((id, applied));
        } else {
            tracing::debug!("too many reservations to give back: this one is left to expire");
        }
    }

    /// Budget `index`'s settled spend not in Redis yet.
    pub(super) fn unsent_of(&self, index: usize) -> Spend {
        self.unsent_since(index, i64::MIN)
    }

    /// Budget `index`'s settled spend not in Redis yet, in slots from `from`.
    pub(super) fn unsent_since(&self, index: usize, from: i64) -> Spend {
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
