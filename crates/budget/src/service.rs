use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tollgate_cache::Tenant;
use tollgate_core::{BoxError, LlmRequest};
use tower::Service;

use crate::budgets::{BudgetSnapshot, Budgets};
use crate::future::BudgetFuture;

/// The service made by [`BudgetLayer`](crate::BudgetLayer).
///
/// `poll_ready` is the inner service's: what a call reserves depends on the request, so it
/// is reserved in `call`, before the inner service is called. A refused call never reaches
/// it, and leaves its readiness for the next call.
#[derive(Clone, Debug)]
pub struct Budget<S> {
    inner: S,
    budgets: Arc<Budgets>,
}

impl<S> Budget<S> {
    pub(crate) fn new(inner: S, budgets: Arc<Budgets>) -> Self {
        Self { inner, budgets }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the budget service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Every budget as it stands.
    pub fn snapshot(&self) -> Vec<BudgetSnapshot> {
        self.budgets.snapshot()
    }
}

impl<S, B, RB> Service<Request<B>> for Budget<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = BudgetFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let reserved = self.budgets.reserve(
            request.extensions().get::<LlmRequest>(),
            request.extensions().get::<Tenant>(),
        );
        match reserved {
            Ok(reservation) => BudgetFuture::calling(self.inner.call(request), reservation),
            Err(error) => BudgetFuture::refused(error),
        }
    }
}
