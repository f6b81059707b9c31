use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tollgate_cache::Tenant;
use tollgate_core::{BoxError, LlmRequest};
use tower::Service;

use crate::budgets::{BudgetSnapshot, Budgets};
use crate::future::BudgetFuture;
use crate::layer::LocalBooks;

/// The service made by [`BudgetLayer`](crate::BudgetLayer).
///
/// `poll_ready` is the inner service's: what a call reserves depends on the request, so it
/// is reserved in `call`, before the inner service is called. A refused call never reaches
/// it, and leaves its readiness for the next call.
///
/// With `RedisBooks` (feature `redis`), the reservation is a round trip
/// to Redis made by the response future, before the inner service is called: the readied
/// inner service moves into the future and a clone takes its place, so `S` must be `Clone`.
#[derive(Clone, Debug)]
pub struct Budget<S, K = LocalBooks> {
    pub(crate) inner: S,
    pub(crate) budgets: Arc<Budgets>,
    // Read by the Redis books' service only.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) books: K,
}

impl<S, K> Budget<S, K> {
    pub(crate) fn new(inner: S, budgets: Arc<Budgets>, books: K) -> Self {
        Self {
            inner,
            budgets,
            books,
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

    /// Consumes the budget service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Budget<S> {
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

#[cfg(feature = "redis")]
mod fleet {
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use http::{Request, Response};
    use tollgate_cache::Tenant;
    use tollgate_core::{BoxError, LlmRequest};
    use tower::Service;

    use super::Budget;
    use crate::budgets::BudgetSnapshot;
    use crate::future::RedisBudgetFuture;
    use crate::redis::{Fleet, Plan, RedisBooks};

    impl<S> Budget<S, RedisBooks> {
        /// Every budget as the fleet's books stand (see
        /// [`BudgetLayer::snapshot`](crate::BudgetLayer::snapshot)).
        pub fn snapshot(&self) -> Vec<BudgetSnapshot> {
            self.fleet().snapshot()
        }

        fn fleet(&self) -> &Arc<Fleet> {
            self.books
                .fleet
                .as_ref()
                .expect("a layer's books are bound to its budgets")
        }
    }

    impl<S, B, RB> Service<Request<B>> for Budget<S, RedisBooks>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone,
        S::Error: Into<BoxError>,
    {
        type Response = Response<RB>;
        type Error = BoxError;
        type Future = RedisBudgetFuture<S, B>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx).map_err(Into::into)
        }

        fn call(&mut self, request: Request<B>) -> Self::Future {
            let Some(llm) = request.extensions().get::<LlmRequest>() else {
                let inner = self.inner.clone();
                return RedisBudgetFuture::uncounted(
                    std::mem::replace(&mut self.inner, inner),
                    request,
                );
            };
            let (price, worst) = match self.budgets.price_and_worst(llm) {
                Ok(priced) => priced,
                Err(error) => return RedisBudgetFuture::refused(error),
            };
            let tenant = request.extensions().get::<Tenant>();
            let plan = Plan {
                applied: self.budgets.applying(llm, tenant),
                worst,
                price,
                provider: llm.provider,
                model: llm.model.clone(),
                tenant_label: self.budgets.tenant_label(tenant),
            };
            let reserve = Box::pin(self.fleet().clone().reserve(plan));
            let inner = self.inner.clone();
            RedisBudgetFuture::reserving(
                reserve,
                std::mem::replace(&mut self.inner, inner),
                request,
            )
        }
    }
}
