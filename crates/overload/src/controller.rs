//! The state of one scope: its moving limit, its detector and its throttle, and the events they
//! emit.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, broadcast};
use tokio::time::Instant;
use tollgate_core::Scope;

use crate::algorithm::{LimitAlgorithm, Sample};
use crate::detector::{Detector, Observation, OverloadState};
use crate::layer::Settings;
use crate::limiter::Limiter;
use crate::metrics::ScopeMetrics;
use crate::throttle::{Probabilities, Throttle};

/// A change of a scope's [`OverloadState`], also emitted as a `tracing` event (`warn` into
/// Warning and Critical, `info` otherwise).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct OverloadEvent {
    /// The scope that changed.
    pub scope: Scope,
    /// The state before.
    pub from: OverloadState,
    /// The state now.
    pub to: OverloadState,
    /// When.
    pub at: Instant,
    /// The share of shed and timed-out calls in the detector's window.
    pub bad_share: f64,
    /// The window's mean latency over the baseline, once a baseline is known.
    pub latency_ratio: Option<f64>,
    /// The concurrency limit at the change.
    pub limit: usize,
}

/// How one call ended, for the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Succeeded, with this normalised latency.
    Success(Duration),
    /// Shed by the upstream (overloaded) or timed out.
    Dropped,
    /// Ended in a way that says nothing about load (a 400, a 401, a rate limit, a cancel): the
    /// throttle counts it as accepted, the limit and detector ignore it.
    Neutral,
}

struct Control {
    algorithm: Box<dyn LimitAlgorithm>,
    detector: Detector,
    throttle: Throttle,
}

/// One scope's state.
pub(crate) struct Controller {
    scope: Scope,
    pub(crate) limiter: Limiter,
    control: Mutex<Control>,
    /// The overload state, cached for lock-free reads.
    state: AtomicU8,
    /// Rejection probabilities (f64 bits), cached for a lock-free happy path.
    reject_interactive: AtomicU64,
    reject_batch: AtomicU64,
    events: broadcast::Sender<OverloadEvent>,
    metrics: ScopeMetrics,
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("scope", &self.scope)
            .field("limit", &self.limiter.limit())
            .field("in_flight", &self.limiter.in_flight())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

fn encode(state: OverloadState) -> u8 {
    state as u8
}

fn decode(state: u8) -> OverloadState {
    match state {
        0 => OverloadState::Normal,
        1 => OverloadState::Warning,
        2 => OverloadState::Critical,
        _ => OverloadState::Recovering,
    }
}

impl Controller {
    pub(crate) fn new(
        scope: Scope,
        settings: &Settings,
        epoch: Instant,
        events: broadcast::Sender<OverloadEvent>,
    ) -> Self {
        let algorithm = settings.algorithm.boxed_clone();
        Self {
            metrics: ScopeMetrics::new(&scope, algorithm.limit()),
            scope,
            limiter: Limiter::new(algorithm.limit()),
            control: Mutex::new(Control {
                algorithm,
                detector: Detector::new(settings.detector.clone(), epoch),
                throttle: Throttle::new(settings.throttle.clone().unwrap_or_default(), epoch),
            }),
            state: AtomicU8::new(encode(OverloadState::Normal)),
            reject_interactive: AtomicU64::new(0f64.to_bits()),
            reject_batch: AtomicU64::new(0f64.to_bits()),
            events,
        }
    }

    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn state(&self) -> OverloadState {
        decode(self.state.load(Ordering::Relaxed))
    }

    /// The state at `now`, letting time move it (Recovering → Normal, failures ageing out).
    pub(crate) fn state_at(&self, now: Instant) -> OverloadState {
        let mut control = self.lock();
        let transition = control.detector.judge(now);
        self.publish(&mut control, transition, now);
        control.detector.state()
    }

    /// The share of shed and timed-out calls in the detector's window.
    pub(crate) fn bad_share(&self, now: Instant) -> f64 {
        self.lock().detector.readings(now).1
    }

    pub(crate) fn rejection_probability(&self, batch: bool) -> f64 {
        let bits = if batch {
            &self.reject_batch
        } else {
            &self.reject_interactive
        };
        f64::from_bits(bits.load(Ordering::Relaxed))
    }

    /// Counts a request rejected here by the throttle.
    pub(crate) fn rejected(&self, now: Instant, batch: bool) {
        self.metrics.throttled(batch);
        let mut control = self.lock();
        control.throttle.record(false, now);
        self.refresh(&mut control, now);
    }

    /// Takes a call's permit in: the call is under way.
    pub(crate) fn start(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> (Lease, Ticket) {
        let in_flight = self.limiter.start();
        self.metrics.started();
        let lease = Lease {
            controller: self.clone(),
            permit: Some(permit),
        };
        let ticket = Ticket {
            controller: self.clone(),
            started: Instant::now(),
            in_flight,
        };
        (lease, ticket)
    }

    fn finish(&self, ticket: &Ticket, ending: Ending, now: Instant) {
        let mut control = self.lock();
        control
            .throttle
            .record(!matches!(ending, Ending::Dropped), now);
        let (observation, latency) = match ending {
            Ending::Success(latency) => (Observation::Success(latency), latency),
            Ending::Dropped => (Observation::Bad, Duration::ZERO),
            Ending::Neutral => {
                self.refresh(&mut control, now);
                return;
            }
        };
        let sample = Sample {
            started: ticket.started,
            latency,
            in_flight: ticket.in_flight,
            dropped: ending == Ending::Dropped,
        };
        let limit = control.algorithm.update(&sample, now);
        self.limiter.set_limit(limit);
        self.metrics.limit(limit);
        let transition = control.detector.observe(observation, now);
        self.publish(&mut control, transition, now);
    }

    fn publish(
        &self,
        control: &mut Control,
        transition: Option<crate::detector::Transition>,
        now: Instant,
    ) {
        if let Some(t) = transition {
            self.state.store(encode(t.to), Ordering::Relaxed);
            self.metrics.transition(t.from, t.to);
            let limit = self.limiter.limit();
            if matches!(t.to, OverloadState::Warning | OverloadState::Critical) {
                tracing::warn!(
                    scope = %self.scope, from = %t.from, to = %t.to, bad_share = t.bad_share,
                    latency_ratio = t.latency_ratio, limit, "upstream overload state changed"
                );
            } else {
                tracing::info!(
                    scope = %self.scope, from = %t.from, to = %t.to, bad_share = t.bad_share,
                    latency_ratio = t.latency_ratio, limit, "upstream overload state changed"
                );
            }
            let _ = self.events.send(OverloadEvent {
                scope: self.scope.clone(),
                from: t.from,
                to: t.to,
                at: now,
                bad_share: t.bad_share,
                latency_ratio: t.latency_ratio,
                limit,
            });
        }
        self.refresh(control, now);
    }

    /// Recomputes the cached rejection probabilities.
    fn refresh(&self, control: &mut Control, now: Instant) {
        let state = control.detector.state();
        let Probabilities { interactive, batch } = control.throttle.probabilities(state, now);
        self.reject_interactive
            .store(interactive.to_bits(), Ordering::Relaxed);
        self.reject_batch.store(batch.to_bits(), Ordering::Relaxed);
    }

    /// Whether the scope can be forgotten: nothing in flight, nothing learned worth keeping.
    pub(crate) fn is_idle(&self) -> bool {
        self.limiter.in_flight() == 0 && self.state() == OverloadState::Normal
    }
}

/// A call's permit, held by its response body until the body ends (see
/// [`PermitBody`](tollgate_concurrency::PermitBody)); given back when dropped — to the limit,
/// or forgotten if the limit shrank below the calls in flight.
pub struct Lease {
    controller: Arc<Controller>,
    permit: Option<OwnedSemaphorePermit>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("scope", self.controller.scope())
            .finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.controller.limiter.finish(permit);
            self.controller.metrics.finished();
        }
    }
}

/// What recording a call needs. Recording consumes it; dropping it records nothing (a
/// cancelled call says nothing about the upstream).
pub(crate) struct Ticket {
    controller: Arc<Controller>,
    pub(crate) started: Instant,
    in_flight: usize,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("scope", self.controller.scope())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// Records how the call ended.
    pub(crate) fn record(self, ending: Ending) {
        self.controller.finish(&self, ending, Instant::now());
    }
}
