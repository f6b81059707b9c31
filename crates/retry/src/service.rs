use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use rand::{RngExt as _, SeedableRng};
use tokio::time::Instant;
use tollgate_core::rng::Rng;
use tollgate_core::{BoxError, Deadline};
use tower::Service;

use crate::future::RetryFuture;
use crate::layer::Shared;
use crate::policy::{Retries, RetryPolicy};

/// The service made by [`RetryLayer`](crate::RetryLayer).
///
/// Each request is cloned once for replays (with a buffered `Full<Bytes>` body from
/// `AnnotateLayer`, that clones the `Bytes`, not the body). The first attempt uses the service
/// readied by `poll_ready`; later attempts wait for readiness again.
#[derive(Debug)]
pub struct Retry<S, P> {
    inner: S,
    shared: Arc<Shared<P>>,
}

impl<S: Clone, P> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, P> Retry<S, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<P>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer's service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, B, RB> Service<Request<B>> for Retry<S, P>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Clone + Send + 'static,
    RB: Send + 'static,
    P: RetryPolicy,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = RetryFuture<S, B, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let now = Instant::now();
        let shared = &self.shared;
        let config = &shared.config;
        shared.budget.deposit();
        let number = shared.requests.fetch_add(1, Ordering::Relaxed);
        let mut rng = match config.seed {
            Some(seed) => Rng::seed_from_u64(seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            None => tollgate_core::rng::from_entropy(),
        };
        let deadline = match request.extensions().get::<Deadline>() {
            Some(deadline) => Some(deadline.0),
            // A budget too far away for an `Instant` (`request_timeout = 1e19`) is no deadline.
            None => config
                .deadline
                .and_then(|budget| now.checked_add(budget))
                .inspect(|&deadline| {
                    request.extensions_mut().insert(Deadline(deadline));
                }),
        };
        if let Some(name) = &config.idempotency_header
            && !request.headers().contains_key(name)
        {
            let key = hex_key(rng.random(), rng.random());
            if let Ok(value) = HeaderValue::from_bytes(&key) {
                request.headers_mut().insert(name.clone(), value);
            }
        }
        let hedge = config
            .hedge
            .filter(|hedge| hedge.applies(&request))
            .and_then(|hedge| shared.latencies.hedge_delay(hedge.after));
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let retries = Retries::new(rng, deadline);
        RetryFuture::start(inner, request, shared.clone(), retries, hedge, now)
    }
}

/// 128 random bits as 32 lowercase hex digits, on the stack.
fn hex_key(high: u64, low: u64) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = [0; 32];
    let bits = (u128::from(high) << 64) | u128::from(low);
    for (i, digit) in key.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    key
}
