//! A scope's leases: the requests served locally, what to ask of Redis for the others, and the
//! refusals Redis would surely give.

use std::time::Duration;

use tokio::time::Instant;

use super::scope::RedisScope;
use super::script::{Ask, Change};
use crate::store::{Charges, Refusal};

impl RedisScope {
    /// Decides locally when it can: `Some(Ok)` when every limited dimension is served from the
    /// lease (or none is asked), `Some(Err)` when the charges can never fit, `None` when Redis
    /// must be asked. Units of a lease that was given back meanwhile go back to Redis.
    pub(crate) fn take(&self, charges: Charges, now: u64) -> Option<Result<(), Refusal>> {
        for (dimension, cell) in self.cells() {
            let units = charges.get(dimension);
            if cell.never(units) {
                return Some(Err(Refusal::Never {
                    dimension,
                    requested: units,
                    limit: cell.quota.limit(),
                }));
            }
        }
        let mut taken: [Option<u64>; 5] = [None; 5];
        for (dimension, cell) in self.cells() {
            let units = charges.get(dimension);
            if units == 0 {
                continue;
            }
            match cell.take(units, now) {
                Some(generation) => taken[dimension.index()] = Some(generation),
                None => {
                    // All or nothing: what the other dimensions gave goes back.
                    for (dimension, cell) in self.cells() {
                        if let Some(generation) = taken[dimension.index()] {
                            let units = charges.get(dimension);
                            if !cell.put_back(units, generation) {
                                self.push(dimension, Change::Add(-(units as i64)));
                            }
                        }
                    }
                    return None;
                }
            }
        }
        Some(Ok(()))
    }

    /// A refusal Redis would surely give, judging by the TATs it last reported, moved by the
    /// changes not yet sent and the lease that would go back: only a wait, which other
    /// processes could only have shortened by releasing since. Saves a round trip per retry
    /// while a line waits on an empty bucket.
    pub(crate) fn expected_refusal(
        &self,
        charges: Charges,
        now: u64,
        max_wait: Duration,
        local: impl Fn(Instant) -> u64,
    ) -> Option<Refusal> {
        let max_wait = u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX);
        for (dimension, cell) in self.cells() {
            let need = charges.get(dimension);
            let seen = cell.last_tat();
            if need == 0 || seen == 0 {
                continue;
            }
            let tat = self.replay(dimension, cell, i128::from(seen), &local);
            let back = i128::from(cell.unspent()) * i128::from(cell.interval);
            let tat = (tat - back).max(i128::from(now));
            let span = need.saturating_mul(cell.interval);
            let depth = cell.tolerance.saturating_sub(cell.margin).max(span);
            let departure = (tat + i128::from(span) - i128::from(depth)).max(i128::from(now));
            let wait = u64::try_from(departure - i128::from(now)).unwrap_or(u64::MAX);
            if wait > max_wait {
                let wait = Duration::from_nanos(wait);
                return Some(Refusal::Wait { dimension, wait });
            }
        }
        None
    }

    /// What to ask of Redis for `charges`: per limited dimension asked, the lease's leftover
    /// given back (it is re-granted with the rest, so leased units never outlive their hold),
    /// the request's units, and a new lease.
    pub(crate) fn asks(&self, charges: Charges) -> Vec<Ask<'_>> {
        self.cells()
            .filter(|(dimension, _)| charges.get(*dimension) > 0)
            .map(|(dimension, cell)| Ask {
                dimension,
                cell,
                back: cell.drain(),
                need: charges.get(dimension),
                extra: cell.lease,
            })
            .collect()
    }

    /// Undoes [`asks`](Self::asks) after a refusal or a failure: the leftovers come back.
    pub(crate) fn restore(asks: &[Ask<'_>]) {
        for ask in asks {
            ask.cell.refund(ask.back);
        }
    }
}
