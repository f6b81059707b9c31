//! [`Translate`]: the service [`TranslateLayer`](crate::TranslateLayer) makes.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::Full;
use tower::Service;

use crate::future::{ResponseFuture, refusal};
use crate::layer::TranslateLayer;
use crate::{Failure, FailureKind, Format, WhenUntranslatable, request};

/// The header of an answer whose call went without some fields: their names, comma-separated.
pub const UNTRANSLATED_HEADER: &str = "x-tollgate-untranslated";

/// The Anthropic API version a call translated for Anthropic asks for.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Translates calls for the inner service; see [`TranslateLayer`].
#[derive(Clone, Debug)]
pub struct Translate<S> {
    inner: S,
    layer: TranslateLayer,
}

impl<S> Translate<S> {
    pub(crate) fn new(inner: S, layer: TranslateLayer) -> Self {
        Self { inner, layer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<Full<Bytes>>> for Translate<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    type Response = Response<crate::body::TranslatedBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Request<Full<Bytes>>) -> Self::Future {
        let TranslateLayer {
            client,
            upstream,
            options,
            when_untranslatable,
        } = self.layer;
        let (mut parts, body) = call.into_parts();
        let body = tollgate_core::body::full_bytes(body);
        let (body, report) = match request(client, upstream, &body, &options) {
            Ok(translated) => translated,
            Err(malformed) => {
                let failure = Failure {
                    kind: FailureKind::InvalidRequest,
                    message: format!("tollgate: cannot read the request: {malformed}"),
                };
                return ResponseFuture::ready(refusal(client, &failure));
            }
        };
        if !report.is_empty() && when_untranslatable == WhenUntranslatable::Refuse {
            let failure = Failure {
                kind: FailureKind::InvalidRequest,
                message: format!(
                    "tollgate: the deployment speaks another format, with no place for: {}",
                    report.fields()
                ),
            };
            return ResponseFuture::ready(refusal(client, &failure));
        }
        parts.uri = with_path(&parts.uri, upstream.path());
        parts.headers.remove(CONTENT_LENGTH);
        match upstream {
            Format::AnthropicMessages => {
                if !parts.headers.contains_key("anthropic-version") {
                    parts.headers.insert(
                        "anthropic-version",
                        HeaderValue::from_static(ANTHROPIC_VERSION),
                    );
                }
            }
            Format::OpenAiChat => {
                parts.headers.remove("anthropic-version");
                parts.headers.remove("anthropic-beta");
            }
        }
        let untranslated = (!report.is_empty())
            .then(|| HeaderValue::from_str(&report.fields()).ok())
            .flatten();
        let future = self
            .inner
            .call(Request::from_parts(parts, Full::new(Bytes::from(body))));
        ResponseFuture::calling(future, client, upstream, untranslated)
    }
}

/// `uri` with its path (and query) replaced by `path`.
fn with_path(uri: &Uri, path: &'static str) -> Uri {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static(path));
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static(path))
}
