//! Limits learned from refusals, for providers that send no rate-limit headers.
//!
//! # Why
//!
//! A quota configured by the user or reported by the provider's headers (OpenAI's
//! `x-ratelimit-*`, Anthropic's `anthropic-ratelimit-*`) is paced before a 429 happens. Many
//! upstreams say nothing until they refuse: Gemini sends no rate-limit headers, Azure only
//! `remaining-*`, and corporate gateways, vLLM or TGI behind a limiter and many
//! OpenAI-compatible hosts answer only with a 429 and a wait. Honouring each 429's wait alone is
//! a storm: the pause ends, everyone goes at once, the next wall of 429s follows, the retry
//! budget runs dry and the rest reach the caller. Measured against a Gemini free tier
//! (15 requests a minute), 84 % of the upstream calls were 429s.
//!
//! # What is learned
//!
//! When a scope's dimension has neither a configured nor a header-reported quota, its first
//! 429 sets a **pace**: the rate the upstream actually admitted just before refusing — the
//! answers counted in the window the limit counts over, less 2 % — after which
//! requests go one at a time at that rate, in arrival order, waiting their turn rather than
//! failing (up to their deadline or `MaxWait`, as with any quota).
//!
//! - **The window.** The wait a 429 asks for is a floor on the window its limit counts over: a
//!   wait is never longer than the window it waits out, but may be much shorter (near a fixed
//!   window's end). So the rate is measured over each of the shortest window the wait allows
//!   (a second for a wait under one: a leaky or token bucket, Azure's 1 s windows; 10 s for one
//!   under 10 s; else a minute), 10 s and a minute, as far as the answers counted go back, and
//!   the lowest rate among those holding enough answers to measure (10) is the one learned: a
//!   burst admitted near a window's end, or a token bucket's burst, looks fast over a second
//!   and not over a minute. A refusal that asks for no wait but names its window (Gemini's
//!   `…PerMinute…` quota ids,
//!   [`Outcome::rate_limit_window`](tollgate_core::Outcome::rate_limit_window)) starts from
//!   that window. A named window does not overrule a short wait: a "per minute" quota whose
//!   429 asks for half a second is enforced over far less than a minute. The pace moves once
//!   per the shortest window. A pace learned from fewer than 10 answers is a guess: it doubles
//!   each window requests wait on it until the next 429 (a leaky bucket refuses the second
//!   request of a burst, after one answer).
//! - **Keep finding it.** A 429 cuts the pace to the lower of 98 % of what was admitted in the
//!   window and 95 % of the pace (85 %, 75 %, 60 % for each 429 that follows a cut within a
//!   window: the cut did not hold). Only one cut counts per overshoot: a 429 for a request sent
//!   before the last cut says nothing new; one within 10 s of a cut says the cut did not hold.
//!   The refused pace is remembered: while requests wait on a pace below 98 % of it — and
//!   below 2 % past what was admitted when it was cut, once the pace has settled (a bucket's
//!   burst keeps a pace far above the limit answered for a while; what is admitted once it is
//!   spent is the limit) — the pace recovers halfway there every 10 s (or every window, if
//!   shorter). Past it, while requests wait and no 429 comes, it probes up once per window
//!   (at most once a minute) by 1 %, a step that doubles every five probes (up to 25 %), so a
//!   higher tier or a quieter neighbour on the same key is found again.
//! - **Headers and configuration win.** A quota the user configured is never learned; one the
//!   provider's headers report replaces a learned pace at once.
//! - **Requests, not guesses.** A 429 that does not say which limit it hit is taken as the
//!   requests limit. Token dimensions are learned from the tokens reserved by the answers
//!   counted; they pace with a second's worth of burst (a request larger than that waits its
//!   share of time rather than being refused), requests with none.
//!
//! # How it behaves on each kind of limiter
//!
//! Tested in `tests/learned.rs` against `tollgate-sim` in simulated time, offered two and four
//! times the hidden limit for ten minutes (after the first minute: 95–100 % of the limit
//! answered, at most 1.2 % of the upstream's calls 429s; `examples/learned_plot.rs` draws the
//! pace over time, `docs/learned-limits.svg`), and in a closed-loop proptest:
//!
//! - **Fixed windows** (Gemini's per-minute quotas, Azure's 1 s and 10 s windows): the first
//!   refusal comes when the window's quota is spent, so what was admitted in the window is the
//!   quota itself; the pace starts at 98 % of it and probes up past it every few windows, one
//!   429 each time.
//! - **Sliding windows**: as fixed windows; an even pace never crowds a window.
//! - **Token buckets**: a refusal comes when the burst is spent, so the first estimate is the
//!   rate offered until then, too high; the 429s that follow at once cut it deeper (95 %,
//!   85 %, …) to what the refill admits, and recovery stops just past that.
//! - **Leaky buckets** (a wait under a second): the window is a second; the pace starts at what
//!   one second admitted and settles on the leak rate.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::admitted::{Admitted, LONGEST};
use crate::gcra::Gcra;
use crate::quota::Dimension;

/// What a 429 says about the limit it hit.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RefusalHint {
    /// The window the limit counts over, when the refusal names it.
    pub(crate) window: Option<Duration>,
    /// How long it asked to wait.
    pub(crate) retry_after: Option<Duration>,
    /// When the refused request was sent (nanoseconds since the store's epoch).
    pub(crate) sent_at: u64,
}

/// The share of the admitted rate a new pace keeps, in thousandths.
const ADMITTED_SHARE: u64 = 980;
/// The most a 429 leaves of the pace, in thousandths: 95 %, and less for each 429 that follows
/// another within a window (the pace it set was still too high).
const CUT_SHARES: [u64; 4] = [950, 850, 750, 600];
/// How far past the rate admitted when cut a pace recovers, in thousandths.
const RECOVERY_PAST_ADMITTED: u64 = 1_020;
/// How often a pace cut below a refused one recovers toward it, at most.
const RECOVERY_EVERY: u64 = 10_000_000_000;
/// How often a pace probes past what was refused, at least: each probe that overshoots costs
/// a 429, so a pace at the limit probes once a minute.
const PROBE_EVERY: u64 = 60_000_000_000;
/// The first step up, in thousandths; it doubles every [`STEPS_PER_DOUBLING`] windows raised
/// without a refusal, up to [`MAX_STEP`].
const FIRST_STEP: u64 = 10;
const STEPS_PER_DOUBLING: u64 = 5;
const MAX_STEP: u64 = 250;
/// Answers a window must hold to measure a rate in it.
const ENOUGH: u64 = 10;

/// One dimension's pace, when learned.
#[derive(Debug, Default)]
struct Pace {
    /// How often it moves: the shortest window its limit may count over, in nanoseconds.
    window: u64,
    /// The next step up, in thousandths.
    step: u64,
    /// Steps taken since the last cut.
    raised: u64,
    /// Cuts in a row, each within a window of the one before.
    cuts: usize,
    /// The interval of the fastest pace known to be refused since the last probe that held
    /// (0: none): the pace recovers toward just under it quickly, and probes past it slowly.
    ceiling: u64,
    /// Learned from too few answers to trust: it doubles every window requests wait on it,
    /// until the next 429.
    starting: bool,
    /// The interval at the rate admitted when last cut: recovery stops a little past it.
    admitted: u64,
    /// Since when the pace has been near the limit: learned, or past its doubling guess. A
    /// rate measured over a window reaching back before it is not the limit's.
    settled_at: u64,
    /// When a 429 last cut it.
    cut_at: u64,
    /// When it last moved.
    moved_at: u64,
}

/// A scope's learned paces and what they are learned from.
#[derive(Debug, Default)]
pub(crate) struct Learner {
    /// What the upstream answered lately.
    pub(crate) admitted: Admitted,
    paces: [Mutex<Pace>; 4],
    /// When to look at raising each pace next (nanoseconds; 0: nothing learned).
    next_look: [AtomicU64; 4],
    /// Whether a request has waited on each pace since it last moved.
    waited: [AtomicBool; 4],
}

/// The window a limit that asked for `wait` counts over, as far as the wait tells.
fn window_of(wait: Duration) -> Duration {
    [1, 10, 60]
        .into_iter()
        .map(Duration::from_secs)
        .find(|window| wait <= *window)
        .unwrap_or(LONGEST)
}

/// A burst of `burst` nanoseconds' worth of a pace of `interval` nanoseconds per unit, in units.
fn burst_units(dimension: Dimension, interval: u64) -> u64 {
    match dimension {
        Dimension::Requests | Dimension::RequestsPerDay => 1,
        // A second's worth of tokens.
        _ => (1_000_000_000 / interval.max(1)).max(1),
    }
}

impl Learner {
    /// Counts an answer of `charges` at `now`, and raises a pace that requests waited on for a
    /// whole window without a refusal. Returns a bit per dimension whose pace moved.
    pub(crate) fn answered(
        &self,
        charges: crate::store::Charges,
        now: u64,
        cells: &[std::sync::OnceLock<Gcra>; 5],
    ) -> u8 {
        self.admitted.add(now, charges);
        let mut moved = 0;
        for (i, next) in self.next_look.iter().enumerate() {
            let at = next.load(Ordering::Relaxed);
            if at == 0 || now < at {
                continue;
            }
            let Some(cell) = cells[i].get().filter(|c| c.is_paced()) else {
                continue;
            };
            let mut pace = self.paces[i].lock().unwrap_or_else(PoisonError::into_inner);
            let interval = cell.interval();
            // 98 % of the lowest pace refused since the last probe that held, and no more than
            // 2 % past what was admitted when it was refused: below that the pace recovers
            // fast, above it it probes slowly. (A bucket's burst can keep a pace well above
            // the limit answered for a while: what is admitted once it is spent is the limit.)
            let safe = u64::try_from(u128::from(pace.ceiling) * 1_000 / u128::from(ADMITTED_SHARE))
                .unwrap_or(u64::MAX)
                .max(pace.admitted.saturating_mul(1_000) / RECOVERY_PAST_ADMITTED);
            let recovering = pace.ceiling != 0 && interval > safe;
            let every = if recovering || pace.starting {
                pace.window.min(RECOVERY_EVERY)
            } else {
                pace.window.max(PROBE_EVERY)
            };
            if now < pace.moved_at.saturating_add(every) {
                next.store(pace.moved_at.saturating_add(every), Ordering::Relaxed);
                continue;
            }
            if self.waited[i].swap(false, Ordering::AcqRel) {
                // Requests wanted more than the pace and none was refused.
                let faster = if pace.starting {
                    // A guess from a handful of answers: find the limit fast.
                    interval / 2
                } else if recovering {
                    // Halfway (in rate) to just under the pace that was refused.
                    let (a, b) = (u128::from(interval), u128::from(safe));
                    u64::try_from(2 * a * b / (a + b)).unwrap_or(safe).max(safe)
                } else {
                    // At it already, and it held: probe higher, the refusal forgotten.
                    pace.ceiling = 0;
                    let faster = interval.saturating_mul(1_000) / (1_000 + pace.step);
                    pace.raised += 1;
                    if pace.raised.is_multiple_of(STEPS_PER_DOUBLING) {
                        pace.step = (pace.step * 2).min(MAX_STEP);
                    }
                    faster
                };
                cell.set_pace(faster, burst_units(Dimension::ALL[i], faster));
                moved |= 1 << i;
            }
            pace.moved_at = now;
            next.store(now.saturating_add(every), Ordering::Relaxed);
        }
        moved
    }

    /// A request waited on dimension `index`'s pace.
    pub(crate) fn waited(&self, index: usize) {
        if !self.waited[index].load(Ordering::Relaxed) {
            self.waited[index].store(true, Ordering::Relaxed);
        }
    }

    /// Learns (or cuts) the pace of `dimension` from a 429: `cell` is its cell, created paced
    /// when there is none. Returns whether a pace was set; nothing is learned without answers
    /// to measure a rate on.
    pub(crate) fn refused(
        &self,
        dimension: Dimension,
        cell: &std::sync::OnceLock<Gcra>,
        hint: RefusalHint,
        now: u64,
    ) -> bool {
        let index = dimension.index();
        let mut pace = self.paces[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let existing = cell.get().filter(|c| c.is_paced());
        if existing.is_some() && hint.sent_at < pace.cut_at {
            // Sent at the old pace: the cut that followed its siblings' 429s covers it.
            return false;
        }
        // The shortest window the limit may count over: the wait says (a wait is never longer
        // than the window it waits out, though it may be much shorter, near a fixed window's
        // end); else the window the refusal names; else a minute. A named window does not
        // overrule a short wait: a "per minute" quota that asks for half a second is enforced
        // over far less than a minute.
        let shortest = hint
            .retry_after
            .map(window_of)
            .or(hint.window)
            .unwrap_or(LONGEST)
            .min(LONGEST);
        let (count, window) = self.measure(dimension, shortest, now);
        if count == 0 && existing.is_none() {
            // Nothing answered yet to measure: the pause alone holds until there is.
            return false;
        }
        let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        // Nanoseconds per unit at 98 % of the admitted rate.
        let admitted = window_nanos.saturating_mul(1_000) / (count.max(1) * ADMITTED_SHARE);
        // A 429 soon after the last cut (within its window, and at least the 10 s a recovery
        // step takes): the pace that cut set, or recovered to, is still too high.
        let cuts = if now < pace.cut_at.saturating_add(pace.window.max(RECOVERY_EVERY)) {
            (pace.cuts + 1).min(CUT_SHARES.len() - 1)
        } else {
            0
        };
        let refused = existing.map_or(0, Gcra::interval);
        let interval = match existing {
            // At most 95 % of the pace that was refused (less after a cut that did not hold).
            Some(_) => admitted.max(refused.saturating_mul(1_000) / CUT_SHARES[cuts]),
            None => admitted,
        };
        let burst = burst_units(dimension, interval);
        match existing {
            Some(cell) => cell.set_pace(interval, burst),
            None => {
                let created = cell.get_or_init(|| Gcra::paced(interval, burst));
                if created.is_paced() {
                    created.set_pace(interval, burst);
                }
            }
        }
        let period = u64::try_from(shortest.as_nanos()).unwrap_or(u64::MAX);
        let settled_at = if existing.is_none() || pace.starting {
            now
        } else {
            pace.settled_at
        };
        // The refused pace bounds the limit from above (a slower pace, a tighter bound).
        let ceiling = if existing.is_some() {
            pace.ceiling.max(refused)
        } else {
            pace.ceiling
        };
        *pace = Pace {
            window: period,
            step: FIRST_STEP,
            raised: 0,
            cuts,
            ceiling,
            starting: existing.is_none() && count < ENOUGH,
            // A rate measured back into a doubling guess, or before the pace was learned, says
            // nothing about the limit.
            admitted: if count >= ENOUGH && now.saturating_sub(settled_at) >= window_nanos {
                window_nanos / count
            } else {
                0
            },
            settled_at,
            cut_at: now,
            moved_at: now,
        };
        self.waited[index].store(false, Ordering::Relaxed);
        self.next_look[index].store(now.saturating_add(period).max(1), Ordering::Relaxed);
        true
    }

    /// The answers of `dimension` in the window a rate is measured over, and that window.
    ///
    /// The limit counts over `shortest` or longer, so each of `shortest`, 10 s and a minute
    /// that the answers counted go back over is a candidate, and the lowest rate among those
    /// holding enough answers to measure one (10) is taken: what a burst near a fixed window's
    /// end, or a token bucket's burst, made look faster over a short window is measured over a
    /// longer one. With too few answers in any, the longest counted is taken.
    fn measure(&self, dimension: Dimension, shortest: Duration, now: u64) -> (u64, Duration) {
        let count = |window| self.admitted.count(dimension, window, now);
        let history = self.admitted.history(now);
        let mut lowest: Option<(u64, Duration)> = None;
        let mut longest = (count(shortest), shortest);
        for window in [shortest, Duration::from_secs(10), LONGEST] {
            if window < shortest || (window > shortest && history < window) {
                continue;
            }
            let answers = count(window);
            longest = (answers, window);
            let slower = |(best, over): (u64, Duration)| {
                u128::from(answers) * over.as_nanos() < u128::from(best) * window.as_nanos()
            };
            if answers >= ENOUGH && lowest.is_none_or(slower) {
                lowest = Some((answers, window));
            }
        }
        lowest.unwrap_or(longest)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::store::Charges;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    fn fresh() -> [OnceLock<Gcra>; 5] {
        std::array::from_fn(|_| OnceLock::new())
    }

    #[test]
    fn the_wait_says_the_window() {
        assert_eq!(window_of(Duration::from_millis(50)), Duration::from_secs(1));
        assert_eq!(window_of(Duration::from_secs(6)), Duration::from_secs(10));
        assert_eq!(window_of(Duration::from_secs(37)), Duration::from_secs(60));
        assert_eq!(window_of(Duration::from_secs(3_600)), LONGEST);
    }

    #[test]
    fn a_first_refusal_paces_at_what_the_named_window_admitted() {
        let learner = Learner::default();
        let cells = fresh();
        // 15 answers in the first 30 s of a per-minute window, then a 429 naming the minute.
        for i in 0..15 {
            learner.answered(Charges::request(100, 10), i * 2 * S, &cells);
        }
        let hint = RefusalHint {
            window: Some(Duration::from_secs(60)),
            retry_after: Some(Duration::from_secs(30)),
            sent_at: 30 * S,
        };
        assert!(learner.refused(Dimension::Requests, &cells[0], hint, 30 * S));
        let cell = cells[0].get().unwrap();
        assert!(cell.is_paced());
        // 98 % of 15 a minute: one every 4.08 s.
        assert_eq!(cell.interval(), 60 * S * 1_000 / (15 * 980));
        // A sibling sent before the cut changes nothing.
        let before = RefusalHint {
            sent_at: 29 * S,
            ..hint
        };
        assert!(!learner.refused(Dimension::Requests, &cells[0], before, 31 * S));
        assert_eq!(cell.interval(), 60 * S * 1_000 / (15 * 980));
    }

    #[test]
    fn a_short_wait_measures_over_a_second_and_widens_when_too_few_answered() {
        let learner = Learner::default();
        let cells = fresh();
        // A leaky bucket of 20 a second: 21 answers in the first second, then a 50 ms wait.
        for i in 0..21 {
            learner.answered(Charges::request(1, 1), i * 48 * MS, &cells);
        }
        let hint = RefusalHint {
            window: None,
            retry_after: Some(Duration::from_millis(50)),
            sent_at: 1_000 * MS,
        };
        assert!(learner.refused(Dimension::Requests, &cells[0], hint, 1_000 * MS));
        let rate = S as f64 / cells[0].get().unwrap().interval() as f64;
        // A second counted to the 100 ms slot: up to one slot short.
        assert!((16.0..22.0).contains(&rate), "{rate} a second");

        // Three answers a minute: a second holds too few, a minute (once counted) enough.
        let learner = Learner::default();
        let cells = fresh();
        for i in 0..40 {
            learner.answered(Charges::request(1, 1), i * 2 * S, &cells);
        }
        let hint = RefusalHint {
            window: None,
            retry_after: Some(Duration::from_millis(500)),
            sent_at: 80 * S,
        };
        assert!(learner.refused(Dimension::Requests, &cells[0], hint, 80 * S));
        let per_minute = 60.0 * S as f64 / cells[0].get().unwrap().interval() as f64;
        assert!((28.0..31.0).contains(&per_minute), "{per_minute} a minute");
    }

    #[test]
    fn nothing_is_learned_without_answers_and_a_pace_rises_only_when_waited_on() {
        let learner = Learner::default();
        let cells = fresh();
        let hint = RefusalHint {
            window: None,
            retry_after: Some(Duration::from_secs(1)),
            sent_at: 0,
        };
        assert!(!learner.refused(Dimension::Requests, &cells[0], hint, 0));
        assert!(cells[0].get().is_none());

        for i in 0..60 {
            learner.answered(Charges::request(1, 1), i * S, &cells);
        }
        let hint = RefusalHint {
            window: Some(Duration::from_secs(60)),
            retry_after: None,
            sent_at: 60 * S,
        };
        assert!(learner.refused(Dimension::Requests, &cells[0], hint, 60 * S));
        let cell = cells[0].get().unwrap();
        let learned = cell.interval();
        // A window passes with nobody waiting: the pace stays.
        learner.answered(Charges::request(1, 1), 121 * S, &cells);
        assert_eq!(cell.interval(), learned);
        // Windows with requests waiting: up 1 % each, the step doubling every five.
        let mut expected = learned;
        for window in 0..6u64 {
            learner.waited(0);
            learner.answered(Charges::request(1, 1), (182 + 61 * window) * S, &cells);
            let step = if window < 5 { 1_010 } else { 1_020 };
            expected = expected * 1_000 / step;
            assert_eq!(cell.interval(), expected, "window {window}");
        }
        // A 429 after that cuts at least 5 %.
        let before = cell.interval();
        let hint = RefusalHint {
            window: Some(Duration::from_secs(60)),
            retry_after: None,
            sent_at: 600 * S,
        };
        assert!(learner.refused(Dimension::Requests, &cells[0], hint, 600 * S));
        assert!(cell.interval() >= before * 1_000 / 950);
        // Another within the window: the cut did not hold, the next goes deeper.
        let again = cell.interval();
        let hint = RefusalHint {
            sent_at: 610 * S,
            ..hint
        };
        assert!(learner.refused(Dimension::Requests, &cells[0], hint, 610 * S));
        assert!(cell.interval() >= again * 1_000 / 850);
    }
}

/// The pace against a hidden limiter, in a closed loop: arrivals wait on the learned pace, the
/// limiter admits or refuses at their departure, and the learner hears both.
#[cfg(test)]
mod closed_loop {
    use std::collections::VecDeque;
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;
    use crate::store::Charges;

    const S: u64 = 1_000_000_000;

    /// `limit` per `window` nanoseconds, fixed or sliding.
    struct Hidden {
        limit: u64,
        window: u64,
        sliding: bool,
        admitted: VecDeque<u64>,
    }

    impl Hidden {
        /// Admits at `at`, or says how long until it would.
        fn ask(&mut self, at: u64) -> Result<(), u64> {
            if self.sliding {
                while self
                    .admitted
                    .front()
                    .is_some_and(|&t| t + self.window <= at)
                {
                    self.admitted.pop_front();
                }
                if (self.admitted.len() as u64) < self.limit {
                    self.admitted.push_back(at);
                    return Ok(());
                }
                return Err(self.admitted[0] + self.window - at);
            }
            let start = at / self.window * self.window;
            while self.admitted.front().is_some_and(|&t| t < start) {
                self.admitted.pop_front();
            }
            if (self.admitted.len() as u64) < self.limit {
                self.admitted.push_back(at);
                return Ok(());
            }
            Err(start + self.window - at)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// After a refusal, a learned pace is cut at least 5 % — or is at or below the hidden
        /// limit already: it never stays above it. No more than four refusals in a row leave it
        /// above.
        #[test]
        fn the_learned_pace_never_stays_above_the_hidden_limit(
            limit in 3u64..120,
            window_secs in prop::sample::select(vec![1u64, 10, 60]),
            sliding in any::<bool>(),
            offered_percent in 150u64..400,
        ) {
            let window = window_secs * S;
            let mut hidden = Hidden { limit, window, sliding, admitted: VecDeque::new() };
            let hidden_rate = limit as f64 / window as f64;
            let learner = Learner::default();
            let cells: [OnceLock<Gcra>; 5] = std::array::from_fn(|_| OnceLock::new());
            let gap = window * 100 / (limit * offered_percent);
            let end = 12 * window.max(60 * S);
            let mut above_in_a_row = 0;
            let mut refusals = 0;
            let mut arrival = 0;
            while arrival < end {
                arrival += gap;
                let departure = match cells[0].get() {
                    Some(cell) => cell.reserve(1, arrival, u64::MAX).unwrap(),
                    None => arrival,
                };
                match hidden.ask(departure) {
                    Ok(()) => {
                        learner.answered(Charges::request(1, 1), departure, &cells);
                    }
                    Err(wait) => {
                        refusals += 1;
                        let before = cells[0].get().map(Gcra::interval);
                        let hint = RefusalHint {
                            window: None,
                            retry_after: Some(Duration::from_nanos(wait)),
                            sent_at: departure,
                        };
                        let cut = learner.refused(Dimension::Requests, &cells[0], hint, departure);
                        if let Some(cell) = cells[0].get() {
                            cell.pause_until(departure + wait, 1);
                            let rate = 1.0 / cell.interval() as f64;
                            if let (true, Some(before)) = (cut, before) {
                                prop_assert!(
                                    rate <= hidden_rate || cell.interval() * 950 >= before * 1_000,
                                    "a refused pace above the limit was not cut"
                                );
                            }
                            above_in_a_row = if rate > hidden_rate { above_in_a_row + 1 } else { 0 };
                            prop_assert!(
                                above_in_a_row <= 4,
                                "{above_in_a_row} refusals in a row left it above the limit"
                            );
                        }
                    }
                }
            }
            prop_assert!(refusals > 0, "offered above the limit, something was refused");
            prop_assert!(cells[0].get().is_some(), "and a pace was learned");
        }
    }
}
