//! One budget's books: spend per slot of its window, and what calls in flight hold.
//!
//! A call may start only if everything already spent in the window, everything reserved by
//! calls in flight and its own worst case together fit the limit. When it ends, its
//! reservation is replaced by what it actually cost. As long as no call costs more than its
//! worst case, the spend therefore never passes the limit, however many calls run at once:
//! every admission is checked against the sum of all the others' worst cases.

use std::collections::BTreeMap;

use crate::Usd;
use crate::window::Window;

/// Money and tokens: what a call reserves, costs, or a window has spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Spend {
    /// Dollars.
    pub usd: Usd,
    /// Tokens, input and output.
    pub tokens: u64,
}

impl Spend {
    /// Nothing.
    pub const ZERO: Self = Self {
        usd: Usd::ZERO,
        tokens: 0,
    };

    /// `self + other`, saturating.
    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self {
            usd: self.usd.saturating_add(other.usd),
            tokens: self.tokens.saturating_add(other.tokens),
        }
    }

    /// `self - other`, at least zero in each.
    #[must_use]
    pub const fn minus(self, other: Self) -> Self {
        Self {
            usd: self.usd.saturating_sub(other.usd),
            tokens: self.tokens.saturating_sub(other.tokens),
        }
    }

    /// The larger of each.
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        Self {
            usd: self.usd.max(other.usd),
            tokens: self.tokens.max(other.tokens),
        }
    }
}

/// A budget's limits: dollars, tokens, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    /// At most this much money per window.
    pub usd: Option<Usd>,
    /// At most this many tokens per window.
    pub tokens: Option<u64>,
}

/// An amount in the unit of a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Amount {
    /// Dollars.
    Usd(Usd),
    /// Tokens.
    Tokens(u64),
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usd(usd) => usd.fmt(f),
            Self::Tokens(tokens) => write!(f, "{tokens} tokens"),
        }
    }
}

/// Why a reservation does not fit: the limit, and what was spent and reserved against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shortfall {
    pub(crate) limit: Amount,
    pub(crate) spent: Amount,
    pub(crate) reserved: Amount,
    pub(crate) requested: Amount,
    /// Unix seconds at which some of the spend stops counting.
    pub(crate) resets_at: i64,
}

/// The books; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Spend per slot start (Unix seconds); only the slots that still count.
    slots: BTreeMap<i64, Spend>,
    reserved: Spend,
    /// Whether the soft threshold was reported since the spend was last below it.
    pub(crate) warned: bool,
}

impl Ledger {
    /// Books holding `slots` already spent (read from a store).
    pub(crate) fn with_slots(slots: impl IntoIterator<Item = (i64, Spend)>) -> Self {
        let mut ledger = Self::default();
        for (slot, spend) in slots {
            let entry = ledger.slots.entry(slot).or_default();
            *entry = entry.plus(spend);
        }
        ledger
    }

    /// Forgets the slots past at `now`: the map holds at most one window's slots.
    pub(crate) fn prune(&mut self, window: Window, now: i64) {
        let from = window.counted_from(now);
        if self.slots.first_key_value().is_some_and(|(&s, _)| s < from) {
            self.slots = self.slots.split_off(&from);
        }
    }

    /// What the window has spent at `now` (call [`prune`](Self::prune) first).
    pub(crate) fn spent(&self) -> Spend {
        self.slots.values().fold(Spend::ZERO, |sum, s| sum.plus(*s))
    }

    /// What calls in flight hold.
    pub(crate) fn reserved(&self) -> Spend {
        self.reserved
    }

    /// When some of the spend stops counting (the window's end; for a rolling window, the
    /// oldest slot's expiry).
    pub(crate) fn resets_at(&self, window: Window, now: i64) -> i64 {
        match window {
            Window::Rolling(_) => self
                .slots
                .keys()
                .next()
                .map_or(now, |&slot| window.slot_expires(slot)),
            _ => window.slot_expires(window.slot_at(now)),
        }
    }

    /// Holds `need` if it fits beside what is spent and reserved.
    pub(crate) fn try_reserve(
        &mut self,
        limits: Limits,
        window: Window,
        need: Spend,
        now: i64,
    ) -> Result<(), Shortfall> {
        self.prune(window, now);
        let spent = self.spent();
        let reserved = self.reserved;
        if let Some(limit) = limits.usd
            && spent
                .usd
                .saturating_add(reserved.usd)
                .saturating_add(need.usd)
                > limit
        {
            return Err(Shortfall {
                limit: Amount::Usd(limit),
                spent: Amount::Usd(spent.usd),
                reserved: Amount::Usd(reserved.usd),
                requested: Amount::Usd(need.usd),
                resets_at: self.resets_at(window, now),
            });
        }
        if let Some(limit) = limits.tokens
            && spent
                .tokens
                .saturating_add(reserved.tokens)
                .saturating_add(need.tokens)
                > limit
        {
            return Err(Shortfall {
                limit: Amount::Tokens(limit),
                spent: Amount::Tokens(spent.tokens),
                reserved: Amount::Tokens(reserved.tokens),
                requested: Amount::Tokens(need.tokens),
                resets_at: self.resets_at(window, now),
            });
        }
        self.reserved = reserved.plus(need);
        Ok(())
    }

    /// Gives back `held`, charging nothing.
    pub(crate) fn release(&mut self, held: Spend) {
        self.reserved = self.reserved.minus(held);
    }

    /// Replaces the reservation `held` with `cost`, charged to the slot of `now`; returns
    /// that slot.
    pub(crate) fn settle(&mut self, held: Spend, cost: Spend, window: Window, now: i64) -> i64 {
        self.reserved = self.reserved.minus(held);
        self.prune(window, now);
        let slot = window.slot_at(now);
        let entry = self.slots.entry(slot).or_default();
        *entry = entry.plus(cost);
        slot
    }

    /// Whether the slot starting at `slot` has spend.
    pub(crate) fn has_slot(&self, slot: i64) -> bool {
        self.slots.contains_key(&slot)
    }

    /// How many slots are kept.
    #[cfg(test)]
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn usd(micros: u64) -> Spend {
        Spend {
            usd: Usd::from_micros(micros),
            tokens: 0,
        }
    }

    #[test]
    fn a_reservation_that_does_not_fit_is_refused_with_the_books() {
        let limits = Limits {
            usd: Some(Usd::from_micros(100)),
            tokens: None,
        };
        let mut ledger = Ledger::default();
        ledger
            .try_reserve(limits, Window::DAY, usd(60), 10)
            .unwrap();
        let refusal = ledger
            .try_reserve(limits, Window::DAY, usd(50), 10)
            .unwrap_err();
        assert_eq!(refusal.reserved, Amount::Usd(Usd::from_micros(60)));
        assert_eq!(refusal.resets_at, 86_400);
        ledger.settle(usd(60), usd(20), Window::DAY, 10);
        ledger
            .try_reserve(limits, Window::DAY, usd(50), 10)
            .unwrap();
        assert_eq!(ledger.spent(), usd(20));
        // A new day: yesterday's spend no longer counts and is forgotten.
        ledger.release(usd(50));
        ledger.prune(Window::DAY, 86_400);
        assert_eq!(ledger.spent(), Spend::ZERO);
        assert_eq!(ledger.slot_count(), 0);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Reserve { worst: u64 },
        Settle { which: usize, share: u8 },
        Release { which: usize },
        Wait { secs: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u64..400).prop_map(|worst| Step::Reserve { worst }),
            (any::<usize>(), 0u8..=100).prop_map(|(which, share)| Step::Settle { which, share }),
            any::<usize>().prop_map(|which| Step::Release { which }),
            (0u64..7_200).prop_map(|secs| Step::Wait { secs }),
        ]
    }

    proptest! {
        /// Whatever the order of reservations, settlements and releases, and whatever part of
        /// its worst case each call costs: spent + reserved never passes the limit, the spend
        /// never goes down within a window, and nothing goes negative.
        #[test]
        fn spent_and_reserved_never_pass_the_limit(
            steps in proptest::collection::vec(step(), 1..200),
            rolling in any::<bool>(),
        ) {
            let limit = 1_000u64;
            let limits = Limits { usd: Some(Usd::from_micros(limit)), tokens: Some(2 * limit) };
            let window = if rolling {
                Window::Rolling(Duration::from_secs(6 * 3_600))
            } else {
                Window::DAY
            };
            let mut ledger = Ledger::default();
            let mut held: Vec<Spend> = Vec::new();
            let mut now = 1_700_000_000i64;
            for step in steps {
                match step {
                    Step::Reserve { worst } => {
                        let need = Spend { usd: Usd::from_micros(worst), tokens: worst * 2 };
                        if ledger.try_reserve(limits, window, need, now).is_ok() {
                            held.push(need);
                        }
                    }
                    Step::Settle { which, share } if !held.is_empty() => {
                        let need = held.swap_remove(which % held.len());
                        let cost = Spend {
                            usd: need.usd.scaled_ppm(u32::from(share) * 10_000),
                            tokens: need.tokens * u64::from(share) / 100,
                        };
                        ledger.prune(window, now);
                        let before = ledger.spent();
                        ledger.settle(need, cost, window, now);
                        prop_assert_eq!(ledger.spent(), before.plus(cost));
                    }
                    Step::Release { which } if !held.is_empty() => {
                        let need = held.swap_remove(which % held.len());
                        ledger.release(need);
                    }
                    Step::Wait { secs } => now += i64::try_from(secs).unwrap(),
                    _ => {}
                }
                ledger.prune(window, now);
                let total = ledger.spent().plus(ledger.reserved());
                prop_assert!(total.usd <= Usd::from_micros(limit), "{total:?}");
                prop_assert!(total.tokens <= 2 * limit, "{total:?}");
                let outstanding = held.iter().fold(Spend::ZERO, |s, h| s.plus(*h));
                prop_assert_eq!(ledger.reserved(), outstanding);
            }
        }
    }
}
