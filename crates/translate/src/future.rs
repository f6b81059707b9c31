//! [`ResponseFuture`]: the answer, in the client's format. A stream is translated as it
//! flows; an answer or an error is read whole (at most [`MAX_ANSWER_BYTES`]) and translated.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use crate::body::TranslatedBody;
use crate::service::UNTRANSLATED_HEADER;
use crate::stream::StreamTranslator;
use crate::{Failure, FailureKind, Format, anthropic, error, openai, response};

/// The most of an answer (not a stream) read to translate it.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

pin_project! {
    /// The answer to a translated call.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F, B> {
        Ready {
            response: Option<Response<TranslatedBody<B>>>,
        },
        Calling {
            #[pin]
            future: F,
            client: Format,
            upstream: Format,
            untranslated: Option<HeaderValue>,
        },
        Reading {
            parts: Option<http::response::Parts>,
            #[pin]
            body: B,
            buffer: Vec<u8>,
            client: Format,
            upstream: Format,
            untranslated: Option<HeaderValue>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn ready(response: Response<TranslatedBody<B>>) -> Self {
        Self {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn calling(
        future: F,
        client: Format,
        upstream: Format,
        untranslated: Option<HeaderValue>,
    ) -> Self {
        Self {
            state: State::Calling {
                future,
                client,
                upstream,
                untranslated,
            },
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A refusal made here, in the `client`'s format.
pub(crate) fn refusal<B>(client: Format, failure: &Failure) -> Response<TranslatedBody<B>> {
    let (status, body) = match client {
        Format::OpenAiChat => openai::write_error(failure),
        Format::AnthropicMessages => anthropic::write_error(failure),
    };
    let mut response = Response::new(TranslatedBody::whole(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Now, in Unix seconds, to stamp OpenAI's answers with (a stamp, never a decision).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn is_stream(parts: &http::response::Parts) -> bool {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
    B::Error: fmt::Display,
{
    type Output = Result<Response<TranslatedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProjection::Ready { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
                StateProjection::Calling {
                    future,
                    client,
                    upstream,
                    untranslated,
                } => {
                    let answer = ready!(future.poll(cx))?;
                    let (client, upstream, untranslated) =
                        (*client, *upstream, untranslated.take());
                    let (mut parts, body) = answer.into_parts();
                    if parts.status.is_success() && is_stream(&parts) {
                        parts.headers.remove(CONTENT_LENGTH);
                        if let Some(value) = untranslated {
                            parts.headers.insert(UNTRANSLATED_HEADER, value);
                        }
                        let translator = StreamTranslator::new(upstream, client, unix_now());
                        let body = TranslatedBody::stream(body, translator);
                        return Poll::Ready(Ok(Response::from_parts(parts, body)));
                    }
                    state.set(State::Reading {
                        parts: Some(parts),
                        body,
                        buffer: Vec::new(),
                        client,
                        upstream,
                        untranslated,
                    });
                }
                StateProjection::Reading {
                    parts,
                    mut body,
                    buffer,
                    client,
                    upstream,
                    untranslated,
                } => {
                    let failure = loop {
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    buffer.extend_from_slice(&data);
                                }
                                if buffer.len() > MAX_ANSWER_BYTES {
                                    break Some(format!(
                                        "the deployment's answer is larger than \
                                         {MAX_ANSWER_BYTES} bytes, too large to translate"
                                    ));
                                }
                            }
                            Some(Err(error)) => {
                                break Some(format!("the deployment's answer broke off: {error}"));
                            }
                            None => break None,
                        }
                    };
                    let (client, upstream) = (*client, *upstream);
                    let mut parts = parts.take().expect("read once");
                    let failure = failure.map(|message| Failure {
                        kind: FailureKind::Server,
                        message: format!("tollgate: {message}"),
                    });
                    let translated = match failure {
                        Some(failure) => Err(failure),
                        None if parts.status.is_success() => {
                            response(upstream, client, buffer, unix_now()).map_err(|malformed| {
                                Failure {
                                    kind: FailureKind::Server,
                                    message: format!(
                                        "tollgate: cannot read the deployment's answer: {malformed}"
                                    ),
                                }
                            })
                        }
                        None => {
                            let (status, body) =
                                error(upstream, client, parts.status.as_u16(), buffer);
                            parts.status =
                                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                            Ok((body, crate::Report::default()))
                        }
                    };
                    let answer = match translated {
                        Ok((body, report)) => {
                            let mut fields = untranslated.take();
                            if !report.is_empty() {
                                let all = match &fields {
                                    Some(sent) => format!(
                                        "{}, {}",
                                        sent.to_str().unwrap_or_default(),
                                        report.fields()
                                    ),
                                    None => report.fields(),
                                };
                                fields = HeaderValue::from_str(&all).ok();
                            }
                            if let Some(fields) = fields {
                                parts.headers.insert(UNTRANSLATED_HEADER, fields);
                            }
                            parts.headers.remove(CONTENT_LENGTH);
                            parts
                                .headers
                                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                            Response::from_parts(parts, TranslatedBody::whole(Bytes::from(body)))
                        }
                        Err(failure) => refusal(client, &failure),
                    };
                    state.set(State::Ready {
                        response: Some(answer),
                    });
                }
            }
        }
    }
}
