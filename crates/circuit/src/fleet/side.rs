//! What one circuit keeps for the fleet, beside its state word: its Redis key, the fleet's
//! episode its open period belongs to, and what the background worker has to send.
//!
//! Nothing here is touched on the closed path: a circuit writes to it when it trips, when a
//! half-open probe succeeds or a call is refused for want of a probe, and when steered by hand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Link;
use super::script::Record;
use crate::config::Mode;

/// Where tokio's clock sits on the wall-clock scale, once per process: open periods are
/// shared as wall-clock milliseconds (the machines of a fleet agree within their NTP skew), and
/// in paused-time tests every replica of the process agrees exactly.
fn anchor() -> (Instant, i64) {
    static ANCHOR: OnceLock<(Instant, i64)> = OnceLock::new();
    *ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        (Instant::now(), i64::try_from(wall).unwrap_or(i64::MAX))
    })
}

/// `at` in wall-clock milliseconds.
pub(crate) fn wall_ms(at: Instant) -> i64 {
    let (instant, wall) = anchor();
    if at >= instant {
        wall + i64::try_from(at.duration_since(instant).as_millis()).unwrap_or(i64::MAX / 2)
    } else {
        wall - i64::try_from(instant.duration_since(at).as_millis()).unwrap_or(i64::MAX / 2)
    }
}

/// The instant of wall-clock milliseconds `ms`.
pub(crate) fn instant_at(ms: i64) -> Instant {
    let (instant, wall) = anchor();
    let offset = Duration::from_millis(ms.abs_diff(wall));
    if ms >= wall {
        instant + offset
    } else {
        instant.checked_sub(offset).unwrap_or(instant)
    }
}

/// What the circuits of one layer share with their worker.
#[derive(Debug)]
pub(crate) struct Hook {
    pub(crate) link: Arc<Link>,
    pub(crate) wake: Notify,
    /// The fleet's records that are not closed, as of the last snapshot: a circuit made after
    /// it starts from its record.
    pub(crate) view: Mutex<HashMap<String, Record>>,
    /// `{prefix}:`, the start of every record key.
    pub(crate) prefix: String,
    pub(crate) index: String,
}

impl Hook {
    pub(crate) fn new(link: Arc<Link>) -> Self {
        let prefix = format!("{{{}}}:", link.settings().prefix);
        Self {
            index: format!("{prefix}index"),
            prefix,
            link,
            wake: Notify::new(),
            view: Mutex::new(HashMap::new()),
        }
    }

    /// Whether Redis is unreachable: circuits then count their probes locally.
    pub(crate) fn is_degraded(&self) -> bool {
        self.link.health.is_degraded()
    }

    pub(crate) fn record(&self, key: &str) -> Option<Record> {
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

/// An open period of this circuit the fleet has not heard of yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unpublished {
    pub(crate) until: i64,
    pub(crate) trips: u32,
    /// The episode whose probe failed, 0 for a trip from closed.
    pub(crate) from: i64,
}

/// A manual mode to send: `None` resets.
pub(crate) type ModeChange = Option<Mode>;

/// The circuit's side of the fleet, behind a lock taken only on transitions.
#[derive(Debug, Default)]
pub(crate) struct Sync {
    /// The fleet's episode of the circuit's open (or half-open) period; 0 when none.
    pub(crate) episode: i64,
    /// The local generations of that period (open, then half-open).
    pub(crate) generation: u32,
    pub(crate) unpublished: Option<Unpublished>,
    /// Probe successes of `episode` not sent yet.
    pub(crate) successes: u32,
    pub(crate) mode: Option<ModeChange>,
    /// Whether the circuit's manual mode came from the fleet (a fleet reset undoes it).
    pub(crate) fleet_mode: bool,
    /// When the worker last got probes for this circuit.
    pub(crate) claimed_at: Option<Instant>,
}

impl Sync {
    /// Whether `generation` is the fleet's episode, open or half-open.
    pub(crate) fn is_episode(&self, generation: u32) -> bool {
        self.episode != 0
            && (generation == self.generation || generation == self.generation.wrapping_add(1))
    }
}

/// One circuit's side of the fleet.
#[derive(Debug)]
pub(crate) struct FleetSide {
    pub(crate) hook: Arc<Hook>,
    /// `{prefix}:<scope>`: the scope's text names its credential by id, never by secret.
    pub(crate) key: String,
    sync: Mutex<Sync>,
    /// Calls refused while half-open for want of a probe.
    pub(crate) wants: AtomicU32,
    /// Something to send.
    dirty: AtomicBool,
}

impl FleetSide {
    pub(crate) fn new(hook: Arc<Hook>, scope: &tollgate_core::Scope) -> Self {
        Self {
            key: format!("{}{scope}", hook.prefix),
            hook,
            sync: Mutex::new(Sync::default()),
            wants: AtomicU32::new(0),
            dirty: AtomicBool::new(false),
        }
    }

    pub(crate) fn sync(&self) -> MutexGuard<'_, Sync> {
        self.sync.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the worker to send something.
    pub(crate) fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
        self.hook.wake.notify_one();
    }

    /// Something is left to send, later.
    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    pub(crate) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// A call was refused while half-open, for want of a probe.
    pub(crate) fn wants_probe(&self) {
        self.wants.fetch_add(1, Ordering::Relaxed);
        self.changed();
    }

    /// The circuit tripped into the open period of `generation`, until `until`.
    pub(crate) fn opened(&self, from_half_open: u32, generation: u32, until: Instant, trips: u32) {
        let mut sync = self.sync();
        let from = if sync.is_episode(from_half_open) {
            sync.episode
        } else {
            0
        };
        sync.unpublished = Some(Unpublished {
            until: wall_ms(until),
            trips,
            from,
        });
        sync.episode = 0;
        sync.generation = generation;
        sync.successes = 0;
        drop(sync);
        self.changed();
    }

    /// A probe of `generation` succeeded.
    pub(crate) fn probe_succeeded(&self, generation: u32) {
        let mut sync = self.sync();
        if sync.is_episode(generation) {
            sync.successes += 1;
            drop(sync);
            self.changed();
        }
    }

    /// Steered by hand: the fleet follows.
    pub(crate) fn steered(&self, mode: Mode) {
        let mut sync = self.sync();
        sync.mode = Some((mode != Mode::Normal).then_some(mode));
        sync.unpublished = None;
        sync.episode = 0;
        sync.successes = 0;
        drop(sync);
        self.changed();
    }
}
