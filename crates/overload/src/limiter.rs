//! A concurrency limit that can move: a FIFO semaphore whose permits are added when the limit
//! grows, and forgotten (now, or as calls end) when it shrinks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The permits of one scope.
#[derive(Debug)]
pub(crate) struct Limiter {
    semaphore: Arc<Semaphore>,
    /// Permits to forget as calls end: the limit shrank below what was in flight.
    debt: AtomicUsize,
    in_flight: AtomicUsize,
    /// The limit last set (changed only under the scope's control lock).
    limit: AtomicUsize,
}

impl Limiter {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            debt: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
        }
    }

    pub(crate) fn semaphore(&self) -> &Arc<Semaphore> {
        &self.semaphore
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Moves the limit to `limit`. Callers serialise calls to this (the control lock).
    pub(crate) fn set_limit(&self, limit: usize) {
        let old = self.limit.swap(limit, Ordering::Relaxed);
        if limit > old {
            let grow = limit - old;
            // Cancel debt first: those permits were never forgotten.
            let paid = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                    Some(debt - debt.min(grow))
                })
                .map_or(0, |debt| debt.min(grow));
            self.semaphore.add_permits(grow - paid);
        } else if limit < old {
            let shrink = old - limit;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
    }

    /// Counts a call that has its permit in; returns the calls in flight, itself included.
    pub(crate) fn start(&self) -> usize {
        self.in_flight.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Gives back a call's permit: forgotten if the limit shrank under it.
    pub(crate) fn finish(&self, permit: OwnedSemaphorePermit) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let owed = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                debt.checked_sub(1)
            })
            .is_ok();
        if owed {
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the order of limit changes, starts and ends, the permits free plus those in
        /// flight minus the debt is the limit, and once everything has ended the free permits
        /// are exactly the limit.
        #[test]
        fn permits_always_add_up_to_the_limit(
            steps in proptest::collection::vec((0u8..3, 1usize..40), 1..200),
        ) {
            let limiter = Limiter::new(10);
            let mut held = Vec::new();
            for (op, n) in steps {
                match op {
                    0 => limiter.set_limit(n),
                    1 => {
                        if let Ok(permit) = limiter.semaphore().clone().try_acquire_owned() {
                            limiter.start();
                            held.push(permit);
                        }
                    }
                    _ => {
                        if let Some(permit) = held.pop() {
                            limiter.finish(permit);
                        }
                    }
                }
                let free = limiter.semaphore().available_permits();
                let debt = limiter.debt.load(Ordering::Relaxed);
                prop_assert_eq!(free + held.len() - debt, limiter.limit());
                prop_assert_eq!(limiter.in_flight(), held.len());
            }
            for permit in held.drain(..) {
                limiter.finish(permit);
            }
            prop_assert_eq!(limiter.semaphore().available_permits(), limiter.limit());
        }
    }
}
