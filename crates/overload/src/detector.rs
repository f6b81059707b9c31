//! The overload detector: Normal → Warning → Critical → Recovering, from the share of shed and
//! timed-out calls and from latency against a learned baseline, over a sliding window.

use std::ops::{AddAssign, SubAssign};
use std::time::Duration;

use tokio::time::Instant;

use crate::window::Window;

/// How overloaded a scope's upstream looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OverloadState {
    /// Calls succeed at the usual latency.
    #[default]
    Normal,
    /// Some calls are shed or slow: batch work is throttled harder, batches shrink.
    Warning,
    /// Many calls are shed or very slow: low-priority work is shed first.
    Critical,
    /// Out of Critical, not yet trusted: it must stay healthy for the recovery period.
    Recovering,
}

impl OverloadState {
    /// The stable snake_case name, for logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Recovering => "recovering",
        }
    }
}

impl std::fmt::Display for OverloadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The detector's thresholds.
///
/// A window is judged once it holds `min_samples` calls: its *bad share* is the share of calls
/// the upstream shed (overloaded) or that timed out; its *latency ratio* is the mean latency of
/// its successful calls over the baseline, an average of latencies learned while Normal.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// The sliding window (default 30 s).
    pub window: Duration,
    /// Calls a window needs before it is judged (default 10).
    pub min_samples: u64,
    /// Bad share from which the state is Warning (default 5 %).
    pub warning_share: f64,
    /// Bad share from which the state is Critical (default 25 %).
    pub critical_share: f64,
    /// Latency ratio from which the state is Warning (default 2).
    pub warning_latency: f64,
    /// Latency ratio from which the state is Critical (default 4).
    pub critical_latency: f64,
    /// How long Recovering must stay healthy before it is Normal again (default 30 s).
    pub recovery: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            min_samples: 10,
            warning_share: 0.05,
            critical_share: 0.25,
            warning_latency: 2.0,
            critical_latency: 4.0,
            recovery: Duration::from_secs(30),
        }
    }
}

impl DetectorConfig {
    /// Checks the thresholds are ordered and in range.
    pub fn validate(&self) -> Result<(), String> {
        let share = |s: f64| (0.0..=1.0).contains(&s) && s > 0.0;
        if !share(self.warning_share) || !share(self.critical_share) {
            return Err("overload shares must be in (0, 1]".into());
        }
        if self.warning_share > self.critical_share {
            return Err("the warning share must not exceed the critical share".into());
        }
        if self.warning_latency <= 1.0 || self.warning_latency > self.critical_latency {
            return Err("latency ratios must satisfy 1 < warning <= critical".into());
        }
        if self.window.is_zero() || self.min_samples == 0 {
            return Err("the window and its minimum samples must be positive".into());
        }
        Ok(())
    }
}

/// One call as the detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Observation {
    /// Succeeded with this (normalised) latency.
    Success(Duration),
    /// Shed by the upstream or timed out.
    Bad,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Tally {
    pub(crate) calls: u64,
    pub(crate) bad: u64,
    pub(crate) successes: u64,
    pub(crate) latency_secs: f64,
}

impl AddAssign for Tally {
    fn add_assign(&mut self, o: Self) {
        self.calls += o.calls;
        self.bad += o.bad;
        self.successes += o.successes;
        self.latency_secs += o.latency_secs;
    }
}

impl SubAssign for Tally {
    fn sub_assign(&mut self, o: Self) {
        self.calls -= o.calls;
        self.bad -= o.bad;
        self.successes -= o.successes;
        self.latency_secs -= o.latency_secs;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Healthy,
    Warning,
    Critical,
}

/// A transition, as [`Detector::observe`] reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Transition {
    pub(crate) from: OverloadState,
    pub(crate) to: OverloadState,
    pub(crate) bad_share: f64,
    pub(crate) latency_ratio: Option<f64>,
}

/// The detector of one scope.
#[derive(Debug)]
pub(crate) struct Detector {
    config: DetectorConfig,
    window: Window<Tally>,
    state: OverloadState,
    epoch: Instant,
    /// Average latency while Normal: the mean of each second folded into a moving average
    /// that spans ten windows, so a slowdown shows against it long before it drags it along.
    baseline: Option<f64>,
    /// Seconds folded into the baseline so far.
    baseline_seconds: u64,
    /// The second being summed for the baseline: (second, latency sum, calls).
    second: Option<(u64, f64, u64)>,
    /// In Recovering: healthy since.
    healthy_since: Option<Instant>,
}

/// The baseline spans this many windows.
const BASELINE_WINDOWS: u64 = 10;

impl Detector {
    pub(crate) fn new(config: DetectorConfig, epoch: Instant) -> Self {
        Self {
            window: Window::new(config.window, epoch),
            config,
            epoch,
            state: OverloadState::Normal,
            baseline: None,
            baseline_seconds: 0,
            second: None,
            healthy_since: None,
        }
    }

    pub(crate) fn state(&self) -> OverloadState {
        self.state
    }

    /// The window's bad share and latency ratio at `now`.
    pub(crate) fn readings(&mut self, now: Instant) -> (Tally, f64, Option<f64>) {
        let tally = self.window.total(now);
        let share = if tally.calls == 0 {
            0.0
        } else {
            tally.bad as f64 / tally.calls as f64
        };
        let ratio = match self.baseline {
            Some(baseline) if tally.successes > 0 && baseline > 0.0 => {
                Some(tally.latency_secs / tally.successes as f64 / baseline)
            }
            _ => None,
        };
        (tally, share, ratio)
    }

    /// Takes one call in and re-judges the state.
    pub(crate) fn observe(&mut self, observation: Observation, now: Instant) -> Option<Transition> {
        let tally = match observation {
            Observation::Success(latency) => {
                let secs = latency.as_secs_f64();
                self.learn(secs, now);
                Tally {
                    calls: 1,
                    successes: 1,
                    latency_secs: secs,
                    bad: 0,
                }
            }
            Observation::Bad => Tally {
                calls: 1,
                bad: 1,
                ..Tally::default()
            },
        };
        self.window.add(now, tally);
        self.judge(now)
    }

    /// Adds a Normal call's latency to the baseline, folding each finished second's mean in:
    /// a plain average over the first seconds, then a moving one spanning ten windows.
    fn learn(&mut self, secs: f64, now: Instant) {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        match &mut self.second {
            Some((at, sum, calls)) if *at == second => {
                *sum += secs;
                *calls += 1;
                return;
            }
            Some((_, sum, calls)) => {
                let mean = *sum / *calls as f64;
                let span = (self.config.window.as_secs().max(1) * BASELINE_WINDOWS) as f64;
                self.baseline_seconds += 1;
                let weight = (1.0 / self.baseline_seconds as f64).max(1.0 / span);
                self.baseline = Some(match self.baseline {
                    Some(b) => b + weight * (mean - b),
                    None => mean,
                });
            }
            None => {}
        }
        // A second starts; only Normal calls teach the baseline what normal is.
        self.second = (self.state == OverloadState::Normal).then_some((second, secs, 1));
    }

    /// Re-judges the state at `now` without a new call (time alone moves Recovering on, and old
    /// failures fall out of the window).
    pub(crate) fn judge(&mut self, now: Instant) -> Option<Transition> {
        let (tally, share, ratio) = self.readings(now);
        let level = self.level(tally.calls, share, ratio);
        let from = self.state;
        let to = match (from, level) {
            (_, Level::Critical) => OverloadState::Critical,
            (OverloadState::Normal | OverloadState::Warning, Level::Warning) => {
                OverloadState::Warning
            }
            (OverloadState::Normal | OverloadState::Warning, Level::Healthy) => {
                OverloadState::Normal
            }
            (OverloadState::Critical, _) => OverloadState::Recovering,
            (OverloadState::Recovering, Level::Warning) => {
                self.healthy_since = None;
                OverloadState::Recovering
            }
            (OverloadState::Recovering, Level::Healthy) => {
                let since = *self.healthy_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.config.recovery {
                    OverloadState::Normal
                } else {
                    OverloadState::Recovering
                }
            }
        };
        if to == from {
            return None;
        }
        self.state = to;
        self.healthy_since = match (to, level) {
            (OverloadState::Recovering, Level::Healthy) => Some(now),
            _ => None,
        };
        Some(Transition {
            from,
            to,
            bad_share: share,
            latency_ratio: ratio,
        })
    }

    fn level(&self, calls: u64, share: f64, ratio: Option<f64>) -> Level {
        if calls < self.config.min_samples {
            return Level::Healthy;
        }
        let ratio = ratio.unwrap_or(1.0);
        if share >= self.config.critical_share || ratio >= self.config.critical_latency {
            Level::Critical
        } else if share >= self.config.warning_share || ratio >= self.config.warning_latency {
            Level::Warning
        } else {
            Level::Healthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DetectorConfig {
        DetectorConfig {
            window: Duration::from_secs(10),
            min_samples: 10,
            recovery: Duration::from_secs(5),
            ..DetectorConfig::default()
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_orders_are_refused() {
        assert_eq!(DetectorConfig::default().validate(), Ok(()));
        let swapped = DetectorConfig {
            warning_share: 0.5,
            critical_share: 0.1,
            ..DetectorConfig::default()
        };
        assert!(swapped.validate().is_err());
        let flat = DetectorConfig {
            warning_latency: 1.0,
            ..DetectorConfig::default()
        };
        assert!(flat.validate().is_err());
    }

    #[test]
    fn the_full_cycle() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut detector = Detector::new(config(), t0);
        let mut now = t0;
        let mut transitions = Vec::new();
        let mut feed = |detector: &mut Detector, now: Instant, o: Observation| {
            if let Some(t) = detector.observe(o, now) {
                transitions.push((t.from, t.to));
            }
        };
        // 20 healthy calls at 100 ms: the baseline.
        for _ in 0..20 {
            now += ms(100);
            feed(&mut detector, now, Observation::Success(ms(100)));
        }
        assert_eq!(detector.state(), OverloadState::Normal);
        // 2 shed calls of 22: 9 % → Warning.
        for _ in 0..2 {
            feed(&mut detector, now, Observation::Bad);
        }
        assert_eq!(detector.state(), OverloadState::Warning);
        // 10 more shed: 12 of 32 → Critical.
        for _ in 0..10 {
            feed(&mut detector, now, Observation::Bad);
        }
        assert_eq!(detector.state(), OverloadState::Critical);
        // Ten seconds of healthy calls: the bad ones leave the window → Recovering ...
        for _ in 0..110 {
            now += ms(100);
            feed(&mut detector, now, Observation::Success(ms(100)));
        }
        assert_eq!(detector.state(), OverloadState::Recovering);
        // ... and 5 s healthy after that → Normal.
        for _ in 0..60 {
            now += ms(100);
            feed(&mut detector, now, Observation::Success(ms(100)));
        }
        assert_eq!(detector.state(), OverloadState::Normal);
        use OverloadState::*;
        assert_eq!(
            transitions,
            [
                (Normal, Warning),
                (Warning, Critical),
                (Critical, Recovering),
                (Recovering, Normal)
            ]
        );
    }

    #[test]
    fn latency_alone_raises_the_state_and_the_baseline_does_not_follow_it() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut detector = Detector::new(config(), t0);
        let mut now = t0;
        // A minute of calls at 100 ms: the baseline.
        for _ in 0..600 {
            now += ms(100);
            detector.observe(Observation::Success(ms(100)), now);
        }
        // Calls five times slower for the whole window: Critical, by latency alone.
        for _ in 0..100 {
            now += ms(100);
            detector.observe(Observation::Success(ms(500)), now);
        }
        assert_eq!(detector.state(), OverloadState::Critical);
        let (_, share, ratio) = detector.readings(now);
        assert_eq!(share, 0.0);
        // Against the baseline as it was when the slowdown began (it stops learning outside
        // Normal), not against the slowdown itself.
        assert!(ratio.unwrap() > 4.0, "{ratio:?}");
    }

    #[test]
    fn too_few_calls_are_not_judged() {
        let t0 = Instant::now();
        let mut detector = Detector::new(config(), t0);
        for _ in 0..9 {
            detector.observe(Observation::Bad, t0);
        }
        assert_eq!(detector.state(), OverloadState::Normal);
        detector.observe(Observation::Bad, t0);
        assert_eq!(detector.state(), OverloadState::Critical);
    }

    #[test]
    fn a_relapse_while_recovering_is_critical_again() {
        let t0 = Instant::now();
        let mut detector = Detector::new(config(), t0);
        for _ in 0..10 {
            detector.observe(Observation::Bad, t0);
        }
        // The failures leave the window.
        let later = t0 + Duration::from_secs(11);
        assert!(detector.judge(later).is_some());
        assert_eq!(detector.state(), OverloadState::Recovering);
        for _ in 0..10 {
            detector.observe(Observation::Bad, later);
        }
        assert_eq!(detector.state(), OverloadState::Critical);
    }
}
