use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::RngExt as _;

use tokio::time::Instant;
use tollgate_core::rng::{self, Rng};
use tollgate_core::{DEFAULT_MAX_SCOPES, Scope, ScopeMode, ScopeRegistry};
use tower::Layer;

use crate::algorithm::{Aimd, LimitAlgorithm};
use crate::controller::{Controller, OverloadEvent};
use crate::detector::DetectorConfig;
use crate::handle::OverloadHandle;
use crate::service::Overload;
use crate::throttle::ThrottleConfig;

/// What latency a sample carries: LLM latency grows with the answer's length, so the raw time
/// of a call says little about load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LatencyMeasure {
    /// Time to the response headers: time to first token for a stream (the default; streams
    /// are recorded when they end, so a stream that fails midway counts as failed).
    #[default]
    FirstByte,
    /// Time to the body's end divided by the output tokens the provider reported (the whole
    /// time when it reported none): for non-streamed calls, whose headers come only once the
    /// answer is written.
    PerOutputToken,
}

/// Tells whether a scope's circuit breaker is open, for the batch-size signal.
pub type BreakerProbe = Arc<dyn Fn(&Scope) -> bool + Send + Sync>;

pub(crate) struct Settings {
    pub(crate) algorithm: Box<dyn LimitAlgorithm>,
    pub(crate) detector: DetectorConfig,
    pub(crate) throttle: Option<ThrottleConfig>,
    pub(crate) queue_timeout: Option<Duration>,
    pub(crate) latency: LatencyMeasure,
    pub(crate) shared: bool,
    pub(crate) max_scopes: usize,
    pub(crate) breaker: Option<BreakerProbe>,
    pub(crate) seed: Option<u64>,
}

impl Clone for Settings {
    fn clone(&self) -> Self {
        Self {
            algorithm: self.algorithm.boxed_clone(),
            detector: self.detector.clone(),
            throttle: self.throttle.clone(),
            queue_timeout: self.queue_timeout,
            latency: self.latency,
            shared: self.shared,
            max_scopes: self.max_scopes,
            breaker: self.breaker.clone(),
            seed: self.seed,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("algorithm", &self.algorithm)
            .field("detector", &self.detector)
            .field("throttle", &self.throttle)
            .field("queue_timeout", &self.queue_timeout)
            .field("latency", &self.latency)
            .field("shared", &self.shared)
            .field("max_scopes", &self.max_scopes)
            .field("breaker", &self.breaker.is_some())
            .field("seed", &self.seed)
            .finish()
    }
}

/// What an [`OverloadLayer`]'s clones share: its settings, the controllers of every scope (or
/// the one shared controller) and the throttle's draws.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Arc<Settings>,
    pub(crate) controllers: ScopeRegistry<Controller, OverloadEvent>,
    /// The throttle's draws, when seeded (the thread's generator otherwise).
    rng: Option<Mutex<Rng>>,
}

impl Shared {
    fn new(settings: Settings) -> Self {
        let settings = Arc::new(settings);
        let mode = if settings.shared {
            ScopeMode::Shared
        } else {
            ScopeMode::PerScope {
                max_scopes: settings.max_scopes,
            }
        };
        let epoch = Instant::now();
        let made = settings.clone();
        Self {
            rng: settings.seed.map(|seed| Mutex::new(rng::seeded(seed))),
            controllers: ScopeRegistry::new(
                mode,
                move |scope, events| Controller::new(scope.clone(), &made, epoch, events.clone()),
                Controller::is_idle,
            ),
            settings,
        }
    }

    /// A uniform draw in [0, 1) for the throttle.
    pub(crate) fn draw(&self) -> f64 {
        match &self.rng {
            Some(rng) => rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .random::<f64>(),
            None => rand::rng().random::<f64>(),
        }
    }
}

/// Adaptive concurrency, overload detection and client-side throttling; see the
/// [crate docs](crate).
///
/// # Clone
///
/// Clones share their state (limits, detectors, throttles): one view of the upstream for every
/// clone. Each builder method starts the state afresh, so configure first, then take the
/// [`handle`](Self::handle) and build services.
#[derive(Clone, Debug)]
pub struct OverloadLayer {
    pub(crate) shared: Arc<Shared>,
}

impl Default for OverloadLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl OverloadLayer {
    /// [`Aimd`] limits, the default detector and throttle, one state per scope (provider,
    /// credential, model).
    pub fn new() -> Self {
        Self::from_settings(Settings {
            algorithm: Box::new(Aimd::new()),
            detector: DetectorConfig::default(),
            throttle: Some(ThrottleConfig::default()),
            queue_timeout: None,
            latency: LatencyMeasure::default(),
            shared: false,
            max_scopes: DEFAULT_MAX_SCOPES,
            breaker: None,
            seed: None,
        })
    }

    fn from_settings(settings: Settings) -> Self {
        Self {
            shared: Arc::new(Shared::new(settings)),
        }
    }

    fn with(&self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::clone(&self.shared.settings);
        change(&mut settings);
        Self::from_settings(settings)
    }

    /// The limit algorithm (a fresh copy per scope).
    pub fn with_algorithm(self, algorithm: impl LimitAlgorithm) -> Self {
        self.with(|s| s.algorithm = Box::new(algorithm))
    }

    /// The detector's thresholds.
    ///
    /// # Panics
    ///
    /// When [`DetectorConfig::validate`] refuses them.
    pub fn with_detector(self, detector: DetectorConfig) -> Self {
        if let Err(error) = detector.validate() {
            panic!("invalid detector config: {error}");
        }
        self.with(|s| s.detector = detector)
    }

    /// The throttle's settings.
    ///
    /// # Panics
    ///
    /// When [`ThrottleConfig::validate`] refuses them.
    pub fn with_throttle(self, throttle: ThrottleConfig) -> Self {
        if let Err(error) = throttle.validate() {
            panic!("invalid throttle config: {error}");
        }
        self.with(|s| s.throttle = Some(throttle))
    }

    /// No client-side throttling: every request waits for a permit.
    pub fn without_throttle(self) -> Self {
        self.with(|s| s.throttle = None)
    }

    /// Gives up on a request that waited `timeout` for a permit (or past its
    /// [`Deadline`](tollgate_core::Deadline), whichever is first), with
    /// [`QueueTimeout`](tollgate_core::error::QueueTimeout).
    pub fn with_queue_timeout(self, timeout: Duration) -> Self {
        self.with(|s| s.queue_timeout = Some(timeout))
    }

    /// What latency the algorithm and the detector see.
    pub fn with_latency(self, measure: LatencyMeasure) -> Self {
        self.with(|s| s.latency = measure)
    }

    /// One state for every request, whatever its scope.
    pub fn shared(self) -> Self {
        self.with(|s| s.shared = true)
    }

    /// Keeps at most `max` scopes ([`DEFAULT_MAX_SCOPES`](crate::DEFAULT_MAX_SCOPES) by default;
    /// idle ones are forgotten to make room; when every kept scope
    /// is busy, a new scope's controller is not kept and sees only its own request — see
    /// [`ScopeMap`](tollgate_core::ScopeMap)).
    pub fn with_max_scopes(self, max: usize) -> Self {
        self.with(|s| s.max_scopes = max)
    }

    /// How to tell a scope's breaker is open, for
    /// [`OverloadHandle::recommended_batch_size`] (1 while it is).
    pub fn with_breaker_probe(
        self,
        probe: impl Fn(&Scope) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.with(|s| s.breaker = Some(Arc::new(probe)))
    }

    /// Seeds the throttle's random draws (repeatable runs and tests).
    pub fn with_seed(self, seed: u64) -> Self {
        self.with(|s| s.seed = Some(seed))
    }

    /// A handle on the state, to read limits, states and batch sizes and to subscribe to
    /// transitions.
    pub fn handle(&self) -> OverloadHandle {
        OverloadHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S> Layer<S> for OverloadLayer {
    type Service = Overload<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Overload::new(inner, self.shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::{EndpointKind, LlmRequest, Provider};

    use super::*;

    fn request(model: &str) -> LlmRequest {
        let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
        llm.model = Some(model.into());
        llm
    }

    #[test]
    fn each_scope_has_its_controller_and_a_request_finds_it_again() {
        let layer = OverloadLayer::new();
        let controllers = &layer.shared.controllers;
        let made = controllers.get_for(&request("a"));
        assert!(Arc::ptr_eq(&made, &controllers.get_for(&request("a"))));
        assert!(!Arc::ptr_eq(&made, &controllers.get_for(&request("b"))));
        assert_eq!(layer.handle().snapshot().len(), 2);
        assert_eq!(controllers.max_scopes(), crate::DEFAULT_MAX_SCOPES);
    }

    #[test]
    fn a_shared_layer_has_one_controller_and_a_bounded_one_forgets_idle_ones() {
        let shared = OverloadLayer::new().shared();
        let controllers = &shared.shared.controllers;
        let one = controllers.for_request(None);
        assert!(Arc::ptr_eq(&one, &controllers.get_for(&request("a"))));
        assert_eq!(shared.handle().snapshot().len(), 1);

        let bounded = OverloadLayer::new().with_max_scopes(2);
        for model in ["a", "b", "c", "d"] {
            drop(bounded.shared.controllers.get_for(&request(model)));
        }
        assert!(bounded.handle().snapshot().len() <= 2);
    }

    #[test]
    fn a_seeded_throttle_draws_the_same_numbers() {
        let draws = |layer: &OverloadLayer| [(); 4].map(|()| layer.shared.draw());
        let (a, b) = (
            OverloadLayer::new().with_seed(7),
            OverloadLayer::new().with_seed(7),
        );
        assert_eq!(draws(&a), draws(&b));
    }
}
