//! The response future of [`Annotate`](super::Annotate).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{Full, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower::Service;

use super::layer::Config;
use crate::BoxError;
use crate::error::BodyTooLarge;
use crate::model_name::check_model_name;

pin_project! {
    /// Buffers the body, annotates the request, then runs the inner service.
    pub struct AnnotateFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        Collecting {
            #[pin]
            collect: Collect<Limited<B>>,
            head: Option<(Parts, S)>,
            config: Arc<Config>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        TooLarge {
            limit: usize,
        },
    }
}

impl<S, B> AnnotateFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    pub(super) fn collecting(
        collect: Collect<Limited<B>>,
        parts: Parts,
        inner: S,
        config: Arc<Config>,
    ) -> Self {
        Self {
            state: State::Collecting {
                collect,
                head: Some((parts, inner)),
                config,
            },
        }
    }

    pub(super) fn too_large(limit: usize) -> Self {
        Self {
            state: State::TooLarge { limit },
        }
    }
}

impl<S, B> Future for AnnotateFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Collecting {
                    collect,
                    head,
                    config,
                } => {
                    let body = match ready!(collect.poll(cx)) {
                        Ok(collected) => collected.to_bytes(),
                        Err(error) if error.is::<LengthLimitError>() => {
                            return Poll::Ready(Err(Box::new(BodyTooLarge {
                                limit: config.max_body_bytes,
                            })));
                        }
                        Err(error) => return Poll::Ready(Err(error)),
                    };
                    let (mut parts, mut inner) = head.take().expect("polled after completion");
                    let llm = super::annotate(&parts, &body, config.provider, &*config.estimator.0);
                    if let Some(Err(invalid)) = llm.model.as_deref().map(check_model_name) {
                        return Poll::Ready(Err(Box::new(invalid)));
                    }
                    tracing::trace!(
                        provider = %llm.provider,
                        endpoint = %llm.endpoint,
                        model = llm.model.as_deref(),
                        input_tokens_estimate = llm.input_tokens_estimate,
                        "annotated request"
                    );
                    parts.extensions.insert(llm);
                    let future = inner.call(Request::from_parts(parts, Full::new(body)));
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                StateProj::TooLarge { limit } => {
                    return Poll::Ready(Err(Box::new(BodyTooLarge { limit: *limit })));
                }
            }
        }
    }
}

impl<S, B> std::fmt::Debug for AnnotateFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnotateFuture").finish_non_exhaustive()
    }
}
