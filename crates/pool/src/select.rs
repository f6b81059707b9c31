//! How the pool picks a member: the [`Policy`] among the best tier's available members (or,
//! for a request with an affinity key, the key's member among those the policy would consider:
//! `affinity.rs`), and the in-flight count each pick holds until its call ends.

use std::sync::atomic::Ordering;

use rand::RngExt as _;
use tokio::time::Instant;

use crate::health::{Health, MemberState};
use crate::metrics;
use crate::pool::Shared;

/// How the pool picks among the members it may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Policy {
    /// The highest health score (scores within 10 points of the best count as equal); among
    /// those the least loaded, then in turn (default).
    #[default]
    Healthiest,
    /// Power of two choices: of two members drawn at random, the one with fewer calls in
    /// flight.
    LeastLoaded,
    /// At random, in proportion to the members' weights.
    Weighted,
    /// The first member, in the order they were added, that may serve.
    Ordered,
}

/// Scores this close to the best count as the best.
const HEALTHY_BAND: u8 = 10;

impl Shared {
    pub(crate) fn best_latency(health: &[Health]) -> Option<f64> {
        health
            .iter()
            .filter_map(|h| h.latency)
            .min_by(f64::total_cmp)
    }

    /// Picks a member not in `skip`, counting it in flight; or the earliest moment one of
    /// them is back. A request with an affinity `key` goes to the key's member among those
    /// the policy would consider (`ordered` considers only the first).
    pub(crate) fn choose(
        &self,
        skip: &[usize],
        context_floor: Option<u64>,
        key: Option<u64>,
        now: Instant,
    ) -> Result<usize, Option<Instant>> {
        let mut health = self.health();
        let best = Self::best_latency(&health);
        let eligible = |i: usize| {
            !skip.contains(&i)
                && context_floor
                    .is_none_or(|floor| self.members[i].context_window.is_some_and(|w| w > floor))
        };
        let mut candidates: Vec<(usize, u8)> = Vec::new();
        let mut tier = u32::MAX;
        let mut earliest: Option<Instant> = None;
        for i in 0..self.members.len() {
            if !eligible(i) {
                continue;
            }
            match health[i].state(now) {
                MemberState::Available => {
                    let member_tier = self.members[i].tier;
                    if member_tier < tier {
                        tier = member_tier;
                        candidates.clear();
                    }
                    if member_tier == tier {
                        candidates.push((i, health[i].score(now, best)));
                    }
                }
                MemberState::CoolingDown { .. } => {
                    if let Some(back) = health[i].back_at() {
                        earliest = Some(earliest.map_or(back, |e| e.min(back)));
                    }
                }
                MemberState::Parked { .. } => {}
            }
        }
        if candidates.is_empty() {
            return Err(earliest);
        }
        if self.policy == Policy::Healthiest {
            // Scores within a band of the best count as equal, so a member a few points
            // behind is not starved.
            let top = candidates.iter().map(|(_, s)| *s).max().unwrap_or(0);
            candidates.retain(|(_, s)| s.saturating_add(HEALTHY_BAND) >= top);
        }
        let key = key.filter(|_| self.policy != Policy::Ordered);
        let pick = match (key, self.policy) {
            (Some(key), _) => self.rendezvous.pick(
                key,
                candidates.iter().map(|(i, _)| (*i, health[*i].in_flight)),
            ),
            (None, Policy::Ordered) => candidates[0].0,
            (None, Policy::Healthiest) => {
                // The least loaded, then in turn.
                let least = candidates
                    .iter()
                    .map(|(i, _)| health[*i].in_flight)
                    .min()
                    .unwrap_or(0);
                let tied: Vec<usize> = candidates
                    .iter()
                    .filter(|(i, _)| health[*i].in_flight == least)
                    .map(|(i, _)| *i)
                    .collect();
                // In turn: the tied member picked longest ago, so that members share the
                // calls evenly whichever of them are tied (a cursor over all members gave two
                // of three tied members two calls in three to one).
                let pick = *tied
                    .iter()
                    .min_by_key(|i| (health[**i].last_pick, **i))
                    .expect("a tied member");
                health[pick].last_pick = self.turn.fetch_add(1, Ordering::Relaxed) as u64 + 1;
                pick
            }
            (None, Policy::LeastLoaded) => {
                let mut rng = rand::rng();
                let a = candidates[rng.random_range(0..candidates.len())].0;
                let b = candidates[rng.random_range(0..candidates.len())].0;
                if health[b].in_flight < health[a].in_flight {
                    b
                } else {
                    a
                }
            }
            (None, Policy::Weighted) => {
                let total: u64 = candidates
                    .iter()
                    .map(|(i, _)| u64::from(self.members[*i].weight))
                    .sum();
                let mut ticket = rand::rng().random_range(0..total.max(1));
                let mut pick = candidates[0].0;
                for (i, _) in &candidates {
                    let weight = u64::from(self.members[*i].weight);
                    if ticket < weight {
                        pick = *i;
                        break;
                    }
                    ticket -= weight;
                }
                pick
            }
        };
        health[pick].in_flight += 1;
        drop(health);
        if metrics::ENABLED
            && let Some(key) = key
        {
            let home = self.rendezvous.home(key);
            self.metrics[home].affinity(home == pick);
        }
        Ok(pick)
    }

    fn finish(&self, member: usize) {
        let mut health = self.health();
        health[member].in_flight = health[member].in_flight.saturating_sub(1);
    }
}

/// Counts a member's call in flight until dropped.
pub(crate) struct InFlight<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) member: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.finish(self.member);
    }
}
