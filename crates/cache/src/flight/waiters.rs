//! Who waits on which flight: the calls in flight by key, and the waiters that leave them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Flight, WaiterId};
use crate::key::CacheKey;
use crate::stats::Counters;

/// A request waiting on a flight; leaving (being dropped) may abandon the call.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) flight: Arc<Flight>,
    pub(crate) id: WaiterId,
    /// Whether this request started the flight.
    pub(crate) leader: bool,
    key: CacheKey,
    flights: Arc<Flights>,
}

impl Waiter {
    pub(crate) fn new(
        flight: Arc<Flight>,
        id: WaiterId,
        leader: bool,
        key: CacheKey,
        flights: Arc<Flights>,
    ) -> Self {
        Self {
            flight,
            id,
            leader,
            key,
            flights,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.flight.leave(self.id) {
            self.flights.remove(&self.key, &self.flight);
        }
    }
}

/// The calls in flight that identical requests can join.
#[derive(Debug)]
pub(crate) struct Flights {
    map: Mutex<HashMap<CacheKey, Arc<Flight>>>,
    /// The most body a flight records (`max_entry_bytes`, as the store caps it).
    record_limit: u64,
    counters: Arc<Counters>,
}

impl Flights {
    pub(crate) fn new(record_limit: u64, counters: Arc<Counters>) -> Self {
        Self {
            map: Mutex::default(),
            record_limit,
            counters,
        }
    }

    /// A new flight, not yet in the map.
    pub(crate) fn start(&self) -> Arc<Flight> {
        Flight::new(self.record_limit, self.counters.clone())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<Flight>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets `flight`, if it is still the one under `key`.
    pub(crate) fn remove(&self, key: &CacheKey, flight: &Arc<Flight>) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
