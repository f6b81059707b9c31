//! The state of a circuit, and the events of its transitions.

use std::fmt;
use std::time::Duration;

use tollgate_core::Scope;

use crate::window::WindowCounts;

/// Where a circuit stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls pass and are counted.
    Closed,
    /// Calls fail fast until the open period ends.
    Open,
    /// A few probes pass to find out whether the upstream is back.
    HalfOpen,
    /// Refusing everything until reset by hand.
    ForcedOpen,
    /// Letting everything through, counting nothing.
    Disabled,
    /// Counting and reporting, never refusing.
    MetricsOnly,
}

impl CircuitState {
    /// The snake_case name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics_only",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a circuit changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Too many failures in a row.
    ConsecutiveFailures,
    /// Too high a share of failures in the window.
    FailureRate,
    /// Too high a share of slow calls in the window.
    SlowCallRate,
    /// The open period ended: time to probe.
    OpenPeriodOver,
    /// Every probe succeeded.
    ProbesSucceeded,
    /// A probe failed.
    ProbeFailed,
    /// Changed by hand through a [`CircuitHandle`](crate::CircuitHandle).
    Manual,
    /// Another process of the fleet sharing the circuit through Redis changed it (feature
    /// `redis`).
    Fleet,
}

/// A state change of one circuit, as sent to subscribers and logged as a `tracing` event.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CircuitEvent {
    /// The scope whose circuit changed (the shared circuit's scope is the default one).
    pub scope: Scope,
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
    /// Why.
    pub reason: Reason,
    /// For a transition to open: how long it stays open.
    pub open_for: Option<Duration>,
}

/// A circuit's counters, for a health report.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CircuitMetrics {
    /// The state now.
    pub state: CircuitState,
    /// What the window holds.
    pub window: WindowCounts,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Trips in a row (reset when the circuit closes).
    pub trips: u32,
    /// While open: how long until probes are let through.
    pub open_remaining: Option<Duration>,
}
