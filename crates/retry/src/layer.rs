use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::HeaderName;
use tower::Layer;

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::hedge::{Hedge, Latencies};
use crate::policy::{DefaultRetryPolicy, RetryPolicy};
use crate::service::Retry;

/// The default header carrying one idempotency key per logical request.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Retries what can succeed, as the provider asks; see the [crate docs](crate).
///
/// # Clone
///
/// Clones share one retry budget and one latency history (for hedging).
#[derive(Clone, Debug)]
pub struct RetryLayer<P = DefaultRetryPolicy> {
    pub(crate) shared: Arc<Shared<P>>,
}

#[derive(Debug)]
pub(crate) struct Shared<P> {
    pub(crate) config: Config,
    pub(crate) policy: P,
    pub(crate) budget: RetryBudget,
    pub(crate) latencies: Latencies,
    pub(crate) requests: AtomicU64,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_retry_after: Duration,
    pub(crate) deadline: Option<Duration>,
    pub(crate) idempotency_header: Option<HeaderName>,
    pub(crate) hedge: Option<Hedge>,
    pub(crate) seed: Option<u64>,
    pub(crate) budget: (f64, u32, u32),
    pub(crate) resend_unanswered: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Backoff::default(),
            max_retry_after: Duration::from_secs(60),
            deadline: None,
            idempotency_header: Some(HeaderName::from_static(IDEMPOTENCY_KEY)),
            hedge: None,
            seed: None,
            budget: (0.2, 100, 10),
            resend_unanswered: false,
        }
    }
}

impl RetryLayer {
    /// Up to 5 attempts, full-jitter exponential backoff from 500 ms up to 30 s, the provider's
    /// `retry-after` up to 60 s, a 20 % retry budget (at least 10 retries a second), an
    /// idempotency key on every request, no deadline, no hedging, and no resending of a billed
    /// call whose connection broke after it was sent.
    pub fn new() -> Self {
        Self::from_config(Config::default(), DefaultRetryPolicy)
    }

    /// Patient retries for work that can wait: 5 attempts, 1 s doubling to 60 s with ±25 %
    /// jitter ([`Backoff::patient`]); the rest as [`new`](Self::new).
    pub fn patient() -> Self {
        Self::new().with_backoff(Backoff::patient())
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: RetryPolicy> RetryLayer<P> {
    fn from_config(config: Config, policy: P) -> Self {
        let (ratio, cap, min_per_second) = config.budget;
        Self {
            shared: Arc::new(Shared {
                config,
                policy,
                budget: RetryBudget::new(ratio, cap, min_per_second),
                latencies: Latencies::default(),
                requests: AtomicU64::new(0),
            }),
        }
    }

    fn with(self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.shared.config.clone();
        change(&mut config);
        Self::from_config(config, self.shared.policy.clone())
    }

    /// At most `attempts` attempts per request, the first included (1 disables retries).
    ///
    /// # Panics
    ///
    /// When `attempts` is 0.
    pub fn with_max_attempts(self, attempts: u32) -> Self {
        assert!(attempts > 0, "a request needs at least one attempt");
        self.with(|c| c.max_attempts = attempts)
    }

    /// The backoff when the provider does not say how long to wait.
    pub fn with_backoff(self, backoff: Backoff) -> Self {
        self.with(|c| c.backoff = backoff)
    }

    /// The longest provider-requested wait honoured; longer ones are cut to it.
    pub fn with_max_retry_after(self, cap: Duration) -> Self {
        self.with(|c| c.max_retry_after = cap)
    }

    /// One deadline across all attempts and waits for a request without its own
    /// [`Deadline`](tollgate_core::Deadline) extension; it is also set as the request's
    /// `Deadline` for the layers below.
    pub fn with_deadline(self, deadline: Duration) -> Self {
        self.with(|c| c.deadline = Some(deadline))
    }

    /// The retry budget: each request buys `ratio` of a retry, at most `cap` are banked, and
    /// `min_per_second` are always allowed.
    pub fn with_budget(self, ratio: f64, cap: u32, min_per_second: u32) -> Self {
        assert!(
            ratio >= 0.0 && ratio.is_finite(),
            "a retry ratio must be a finite share >= 0"
        );
        self.with(|c| c.budget = (ratio, cap, min_per_second))
    }

    /// The header that carries the idempotency key (`None`: send none).
    pub fn with_idempotency_header(self, header: Option<HeaderName>) -> Self {
        self.with(|c| c.idempotency_header = header)
    }

    /// Whether a billed call ([`Repeat::Billed`](tollgate_core::Repeat::Billed): generation,
    /// embeddings) whose connection broke after it may have been sent
    /// ([`ConnectionLost`](tollgate_core::OutcomeKind::ConnectionLost)) is sent again (default
    /// `false`). The provider may have processed the first copy: with `true`, the call may be
    /// billed twice. File uploads, batch creation and unknown `POST`s are never resent after
    /// such a failure, whatever this says; reads always are. See
    /// [why a retry can cost twice](crate#why-a-retry-can-cost-twice).
    pub fn with_resend_unanswered(self, resend: bool) -> Self {
        self.with(|c| c.resend_unanswered = resend)
    }

    /// Sends a backup attempt for slow calls; see [`Hedge`].
    pub fn with_hedging(self, hedge: Hedge) -> Self {
        self.with(|c| c.hedge = Some(hedge))
    }

    /// Seeds the jitter (and idempotency keys), for reproducible runs.
    pub fn with_seed(self, seed: u64) -> Self {
        self.with(|c| c.seed = Some(seed))
    }

    /// Decides retries with `policy`.
    pub fn with_policy<P2: RetryPolicy>(self, policy: P2) -> RetryLayer<P2> {
        RetryLayer::from_config(self.shared.config.clone(), policy)
    }

    /// The budget, to watch its balance.
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.budget
    }
}

impl<S, P: RetryPolicy> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.shared.clone())
    }
}
