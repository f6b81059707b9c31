//! The time the scripts run at: the wall clock, as tokio's clock sees it, following the system
//! clock's steps.
//!
//! # Why the wall clock
//!
//! The scripts write absolute times (TATs) to Redis, and every process of a fleet compares
//! them with its own now: the times must be on one scale on every machine, the wall clock (NTP
//! keeps machines within milliseconds of each other). Redis `TIME` would not follow a paused
//! tokio clock in tests, so the time is tokio's clock placed on the wall-clock scale by an
//! anchor, `anchor_wall + (now − anchor_instant)`, one per process: every store of a process
//! agrees, and paused time stays exact.
//!
//! # Why the anchor watches for steps
//!
//! An anchor taken once would never see the system clock step — NTP correcting a machine that
//! booted with a wrong clock, a virtual machine resumed after a pause, an operator's fix. The
//! process would go on writing times off by the step for as long as it runs, while a replica
//! started after the step writes the right ones, and the fleet's processes would disagree on
//! every bucket they share. So at most once per [`CHECK_EVERY`] of real time, the anchor
//! compares how far the wall clock moved since a baseline with how far real monotonic time moved
//! (`std::time::Instant`: NTP slews it but never steps it, and tokio's pause does not touch it).
//! A difference past [`STEP`] is a step: the anchor moves by it, and the baseline starts again.
//! Both readings are real time, so a paused, advanced tokio clock is never mistaken for a step.
//! Both are read through one injectable [`Clock`](tollgate_core::Clock) (`now` for the
//! monotonic reading, `wall` for the system clock), so tests can step the wall clock.
//!
//! # What a step does
//!
//! Until it is seen (within [`CHECK_EVERY`]), the process writes times on the old scale, as
//! before. From then on its times move by the step. A step forward makes the fleet's TATs look
//! older to this process: its buckets look refilled by up to the step (at most a full bucket),
//! once. A step backward makes them look newer: its requests wait up to the step longer, once.
//! Reservations already granted keep their departure instants and leases their expiry (both
//! are tokio instants, not wall times); leased units were reserved in Redis on the old scale
//! and are spent or given back as usual.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// How often, in real time, the anchor compares the wall clock with monotonic time.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The least difference taken for a step; below it, a difference is left to accumulate.
pub(crate) const STEP: Duration = Duration::from_millis(50);

/// Real time: `std::time::Instant` (which tokio's pause does not touch) and the system clock.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SystemClock;

impl tollgate_core::Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::from_std(std::time::Instant::now())
    }
}

/// Maps tokio's clock to the wall clock, through an anchor shared by every store of the
/// process; `start` numbers this store's local nanoseconds.
#[derive(Clone, Debug)]
pub(crate) struct Clock {
    /// This store's start, for the local atomics.
    start: Instant,
    anchor: Arc<Anchor>,
}

static ANCHOR: OnceLock<Arc<Anchor>> = OnceLock::new();

impl Clock {
    /// A clock on the process's anchor.
    pub(crate) fn new() -> Self {
        let anchor = ANCHOR.get_or_init(|| Arc::new(Anchor::new(SystemClock)));
        Self::with_anchor(anchor.clone())
    }

    /// A clock on an anchor of its own.
    pub(crate) fn with_anchor(anchor: Arc<Anchor>) -> Self {
        Self {
            start: Instant::now(),
            anchor,
        }
    }

    /// Nanoseconds since this store's start, for the local atomics.
    pub(crate) fn local(&self, at: Instant) -> u64 {
        crate::memory::nanos_since(self.start, at)
    }

    /// The instant `nanos` after this store's start.
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.start + Duration::from_nanos(nanos)
    }

    /// The frame of one script call made at `now`.
    pub(crate) fn frame(&self, now: Instant) -> Frame {
        let wall = self.anchor.wall_at(now).max(0);
        Frame {
            now,
            second: u64::try_from(wall / 1_000_000_000).unwrap_or(u64::MAX),
            nanos: (wall % 1_000_000_000) as i64,
        }
    }
}

/// Reads the monotonic and wall clocks of a [`Clock`](tollgate_core::Clock) at one moment.
type Read = Box<dyn Fn() -> (std::time::Instant, i128) + Send + Sync>;

/// Where tokio's clock sits on the wall-clock scale, moved by the system clock's steps.
pub(crate) struct Anchor {
    read: Read,
    state: Mutex<AnchorState>,
}

#[derive(Debug)]
struct AnchorState {
    /// An instant (tokio's clock as a std instant) and the wall-clock nanoseconds it stands for.
    instant: std::time::Instant,
    wall: i128,
    /// A monotonic reading and the wall clock at the same moment: steps are measured from it.
    real: std::time::Instant,
    real_wall: i128,
    /// The monotonic reading at which to compare again.
    next_check: std::time::Instant,
}

impl Anchor {
    /// An anchor taken now, reading monotonic time from `clock.now()` and the system clock
    /// from `clock.wall()`.
    pub(crate) fn new(clock: impl tollgate_core::Clock) -> Self {
        let read: Read = Box::new(move || (clock.now().into_std(), nanos(clock.wall())));
        let (real, real_wall) = read();
        Self {
            read,
            state: Mutex::new(AnchorState {
                instant: real,
                wall: real_wall,
                real,
                real_wall,
                next_check: real + CHECK_EVERY,
            }),
        }
    }

    /// The wall-clock nanoseconds of `now`, after looking for a step if one is due.
    fn wall_at(&self, now: Instant) -> i128 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (real, real_wall) = (self.read)();
        if real >= state.next_check {
            state.next_check = real + CHECK_EVERY;
            let moved = real_wall - state.real_wall;
            let elapsed = signed_nanos(real, state.real);
            let step = moved - elapsed;
            if step.unsigned_abs() >= STEP.as_nanos() {
                tracing::warn!(
                    step_ms = step / 1_000_000,
                    "the system clock stepped: rate-limit times written to redis follow it"
                );
                state.wall += step;
                state.real = real;
                state.real_wall = real_wall;
            }
        }
        state.wall + signed_nanos(now.into_std(), state.instant)
    }
}

impl fmt::Debug for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Anchor").field("state", &*state).finish()
    }
}

/// `at − since` in nanoseconds, negative when `at` is earlier.
fn signed_nanos(at: std::time::Instant, since: std::time::Instant) -> i128 {
    match at.checked_duration_since(since) {
        Some(after) => after.as_nanos() as i128,
        None => -(since.duration_since(at).as_nanos() as i128),
    }
}

/// Nanoseconds since the UNIX epoch (negative before it).
fn nanos(wall: SystemTime) -> i128 {
    match wall.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

/// One call's time: whole seconds since the UNIX epoch and the nanoseconds within.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub(crate) now: Instant,
    pub(crate) second: u64,
    pub(crate) nanos: i64,
}

impl Frame {
    /// `at` in the script's terms: nanoseconds since the frame's second.
    pub(crate) fn offset(&self, at: Instant) -> i64 {
        let delta = if at >= self.now {
            i64::try_from((at - self.now).as_nanos()).unwrap_or(i64::MAX)
        } else {
            -i64::try_from((self.now - at).as_nanos()).unwrap_or(i64::MAX)
        };
        self.nanos.saturating_add(delta)
    }

    /// The instant `relative` nanoseconds after the frame's `now` (before it when negative).
    pub(crate) fn instant(&self, relative: i64) -> Instant {
        let magnitude = Duration::from_nanos(relative.unsigned_abs());
        if relative >= 0 {
            self.now + magnitude
        } else {
            self.now.checked_sub(magnitude).unwrap_or(self.now)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    use super::*;

    /// Real time that moves only when told, with a system clock that can step.
    #[derive(Clone)]
    struct SteppingClock {
        base: Instant,
        base_wall: SystemTime,
        real_nanos: Arc<AtomicU64>,
        step_nanos: Arc<AtomicI64>,
    }

    impl SteppingClock {
        fn new() -> Self {
            Self {
                base: Instant::now(),
                base_wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                real_nanos: Arc::default(),
                step_nanos: Arc::default(),
            }
        }

        fn pass(&self, real: Duration) {
            self.real_nanos
                .fetch_add(real.as_nanos() as u64, Ordering::Relaxed);
        }

        fn step(&self, by: i64) {
            self.step_nanos.fetch_add(by, Ordering::Relaxed);
        }
    }

    impl tollgate_core::Clock for SteppingClock {
        fn now(&self) -> Instant {
            self.base + Duration::from_nanos(self.real_nanos.load(Ordering::Relaxed))
        }

        fn wall(&self) -> SystemTime {
            let real = Duration::from_nanos(self.real_nanos.load(Ordering::Relaxed));
            let step = self.step_nanos.load(Ordering::Relaxed);
            let stepped = self.base_wall + real;
            if step >= 0 {
                stepped + Duration::from_nanos(step as u64)
            } else {
                stepped - Duration::from_nanos(step.unsigned_abs())
            }
        }
    }

    const SECOND: i64 = 1_000_000_000;

    /// The frame's wall-clock time, in nanoseconds since the stepping clock's base.
    fn at(clock: &Clock, now: Instant) -> i128 {
        let frame = clock.frame(now);
        i128::from(frame.second) * 1_000_000_000 + i128::from(frame.nanos)
            - 1_800_000_000 * 1_000_000_000
    }

    fn stepping() -> (SteppingClock, Clock, Instant) {
        let real = SteppingClock::new();
        let clock = Clock::with_anchor(Arc::new(Anchor::new(real.clone())));
        (real, clock, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_step_the_frame_follows_paused_time_exactly() {
        let (real, clock, start) = stepping();
        assert_eq!(at(&clock, start), 0);
        tokio::time::advance(Duration::from_millis(120_250)).await;
        assert_eq!(at(&clock, Instant::now()), 120_250_000_000);
        // Real time passes too, in its own steps, checks and all: nothing moves.
        for _ in 0..5 {
            real.pass(Duration::from_millis(700));
            assert_eq!(at(&clock, Instant::now()), 120_250_000_000);
        }
        // A small difference (NTP slewing) is not a step.
        real.step(20_000_000);
        real.pass(CHECK_EVERY);
        assert_eq!(at(&clock, Instant::now()), 120_250_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_forward_is_seen_within_the_check_interval() {
        let (real, clock, start) = stepping();
        real.step(10 * SECOND);
        assert_eq!(at(&clock, start), 0, "not yet looked");
        real.pass(CHECK_EVERY);
        assert_eq!(at(&clock, start), i128::from(10 * SECOND));
        tokio::time::advance(Duration::from_secs(5)).await;
        real.pass(CHECK_EVERY);
        assert_eq!(
            at(&clock, Instant::now()),
            i128::from(15 * SECOND),
            "seen once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_back_is_seen_within_the_check_interval() {
        let (real, clock, start) = stepping();
        tokio::time::advance(Duration::from_secs(30)).await;
        real.pass(Duration::from_millis(300));
        real.step(-10 * SECOND);
        assert_eq!(at(&clock, Instant::now()), i128::from(30 * SECOND));
        real.pass(Duration::from_millis(700));
        assert_eq!(at(&clock, Instant::now()), i128::from(20 * SECOND));
        assert_eq!(at(&clock, start), i128::from(-10 * SECOND));
    }

    #[test]
    fn stores_of_a_process_share_its_anchor() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (a, b) = (Clock::new(), Clock::new());
            assert!(Arc::ptr_eq(&a.anchor, &b.anchor));
            let now = Instant::now();
            let (fa, fb) = (a.frame(now), b.frame(now));
            assert_eq!((fa.second, fa.nanos), (fb.second, fb.nanos));
        });
    }
}
