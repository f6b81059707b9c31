use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tollgate_core::{BoxError, Deadline, EndpointKind, LlmRequest, Provider, Scope};
use tower::Service;

use crate::future::RateLimitFuture;
use crate::layer::Config;
use crate::reservation::Ticket;
use crate::store::{Charges, Store};

/// A per-request cap on the wait for capacity, as a request extension; the layer's
/// [`with_max_wait`](crate::RateLimitLayer::with_max_wait) is the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxWait(pub Duration);

/// The service made by [`RateLimitLayer`](crate::RateLimitLayer).
///
/// `poll_ready` is always ready: capacity depends on the request (its scope and tokens), so it
/// is reserved in `call`, before anything is sent. A request that must wait waits in its
/// response future, holding no capacity of the inner service; once its time comes it waits for
/// the inner service to be ready and calls a clone of it.
#[derive(Debug)]
pub struct RateLimit<S, St: Store> {
    inner: S,
    store: St,
    config: Arc<Config>,
}

impl<S: Clone, St: Store> Clone for RateLimit<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S, St: Store> RateLimit<S, St> {
    pub(crate) fn new(inner: S, store: St, config: Arc<Config>) -> Self {
        Self {
            inner,
            store,
            config,
        }
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

    /// The store.
    pub fn store(&self) -> &St {
        &self.store
    }
}

/// What a request asks of the limits, from its annotation.
fn charges(llm: Option<&LlmRequest>, output_average: impl FnOnce() -> u64) -> Charges {
    let Some(llm) = llm else {
        return Charges::request(0, 0);
    };
    let choices = u64::from(llm.n.unwrap_or(1).max(1));
    let output = match (llm.endpoint.is_generation(), llm.max_output_tokens) {
        (false, _) => 0,
        (true, Some(cap)) => u64::from(cap),
        (true, None) => output_average(),
    };
    let embeddings = llm.endpoint == EndpointKind::Embeddings;
    let input = u64::from(llm.input_tokens_estimate).max(u64::from(embeddings));
    Charges::request(input, output.saturating_mul(choices))
}

impl<S, St, B, RB> Service<Request<B>> for RateLimit<S, St>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    St: Store,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = RateLimitFuture<S, St, B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let now = Instant::now();
        let llm = request.extensions().get::<LlmRequest>();
        let mut scope =
            llm.map_or_else(|| Scope::new(Provider::OpenAiCompatible), LlmRequest::scope);
        if !self.config.per_model {
            scope = scope.with_model(None);
        }
        let provider = llm.map(|r| r.provider);
        let state = self.store.scope(&scope, now);
        let config = &self.config;
        let stats = St::stats(&state);
        stats.metrics.init(&scope);
        let charges = charges(llm, || stats.output_estimate(config.default_output_tokens));
        let mut max_wait = request
            .extensions()
            .get::<MaxWait>()
            .map_or(config.max_wait, |m| m.0.min(config.max_wait));
        if let Some(deadline) = request.extensions().get::<Deadline>() {
            max_wait = max_wait.min(deadline.remaining(now));
        }
        let give_up_at = (max_wait != Duration::MAX).then(|| now + max_wait);
        let waiters = stats.has_waiters();
        let ticket = Ticket::new(
            self.store.clone(),
            state,
            charges,
            provider,
            config.clone(),
            give_up_at,
            now,
        );
        if waiters {
            // Others are already waiting: no jumping the line.
            return RateLimitFuture::queued(self.inner.clone(), request, ticket);
        }
        let reserve = self
            .store
            .reserve(ticket.scope(), charges, now, Duration::ZERO);
        RateLimitFuture::reserving(reserve, self.inner.clone(), request, ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::Provider;

    #[test]
    fn charges_follow_the_annotation() {
        let mut chat = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
        chat.input_tokens_estimate = 100;
        assert_eq!(charges(Some(&chat), || 700), Charges::request(100, 700));
        chat.max_output_tokens = Some(50);
        chat.n = Some(2);
        assert_eq!(charges(Some(&chat), || 700), Charges::request(100, 100));
        let embed = LlmRequest::new(Provider::OpenAi, EndpointKind::Embeddings);
        assert_eq!(charges(Some(&embed), || 700), Charges::request(1, 0));
        assert_eq!(charges(None, || 700), Charges::request(0, 0));
    }
}
