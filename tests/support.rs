//! Test support: the layers that exist, stacked over `tollgate-sim`, and a client loop that
//! does what the provider says.
//!
//! The retry layer does not exist yet, so [`send_as_told`] plays the client that honours
//! `Outcome::retry_after` and never retries what `Outcome::is_retryable` rules out; once
//! `tollgate-retry` lands, these tests should drive it instead.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::{EndOfStream, ObservedBody};
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, Outcome, Provider, RateLimitSnapshot, Usage};
use tollgate_sim::{SimBody, SimConfig, SimService};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

/// The stack under test, type-erased.
pub type Stack = BoxCloneService<Request<Full<Bytes>>, Response<ObservedBody<SimBody>>, BoxError>;

/// A simulator with `toml`, in-process.
///
/// # Panics
///
/// If the scenario is invalid.
pub fn sim(toml: &str) -> SimService {
    SimService::new(SimConfig::from_toml(toml).expect("a valid scenario")).expect("a valid config")
}

/// Annotate → Classify → the simulator, with `provider` set explicitly when the simulator's
/// loopback address cannot say it.
pub fn stack(sim: &SimService, provider: Option<Provider>) -> Stack {
    let annotate = provider.map_or_else(AnnotateLayer::new, |p| {
        AnnotateLayer::new().with_provider(p)
    });
    let service = ServiceBuilder::new()
        .layer(annotate)
        .layer(ClassifyLayer::new())
        .map_err(|e: std::convert::Infallible| -> BoxError { match e {} })
        .service(sim.clone());
    BoxCloneService::new(service)
}

/// One attempt: when it was sent, what came of it, and the body.
#[derive(Debug)]
pub struct Attempt {
    /// When it was sent.
    pub at: Instant,
    /// Its outcome.
    pub outcome: Outcome,
    /// The rate limits the response's headers reported.
    pub snapshot: RateLimitSnapshot,
    /// The usage the body reported at its end.
    pub usage: Option<Usage>,
    /// The response body.
    pub body: Bytes,
}

/// Sends `request()` until it succeeds, is not retryable, or `max_attempts` are spent, waiting
/// exactly the outcome's `retry_after` between attempts (a second when the provider gave none).
///
/// # Panics
///
/// If the stack fails without a response.
pub async fn send_as_told(
    stack: &Stack,
    request: impl Fn() -> Request<Full<Bytes>>,
    max_attempts: usize,
) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = Vec::new();
    while attempts.len() < max_attempts {
        if let Some(last) = attempts.last() {
            if last.outcome.is_success() || !last.outcome.is_retryable() {
                break;
            }
            let wait = last.outcome.retry_after.unwrap_or(Duration::from_secs(1));
            tokio::time::sleep_until(last.at + wait).await;
        }
        let at = Instant::now();
        let response = stack.clone().oneshot(request()).await.expect("a response");
        let outcome = response
            .extensions()
            .get::<Outcome>()
            .cloned()
            .expect("classified");
        let snapshot = response
            .extensions()
            .get::<RateLimitSnapshot>()
            .cloned()
            .unwrap_or_default();
        let end = response
            .extensions()
            .get::<EndOfStream>()
            .cloned()
            .expect("observed");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let usage = end.ended().and_then(|end| end.usage);
        attempts.push(Attempt {
            at,
            outcome,
            snapshot,
            usage,
            body,
        });
    }
    attempts
}

/// A JSON POST to `uri` with one header.
///
/// # Panics
///
/// If the URI or header is invalid.
pub fn post(uri: &str, header: (&str, &str), body: &serde_json::Value) -> Request<Full<Bytes>> {
    Request::post(uri)
        .header(header.0, header.1)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid request")
}
