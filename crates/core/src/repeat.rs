//! Whether a request may be sent again: the one place that decides, for the retry layer, the
//! pool's failover and hedging alike.
//!
//! # Why not resend everything that failed?
//!
//! A request whose attempt failed may still have been processed. A connection reset after the
//! request was written, a timeout before the response head, a 500: the provider may have run
//! the generation (and billed it), stored the file, created the batch. Sending it again then
//! bills it twice, or leaves a second file or batch behind. Whether that is acceptable depends
//! on what the request does ([`Repeat`], decided once by
//! [`AnnotateLayer`](crate::annotate::AnnotateLayer) from the method and the path) and on what
//! the failure proves ([`Delivery`]):
//!
//! | failure | [`Safe`](Repeat::Safe) | [`Billed`](Repeat::Billed) | [`Never`](Repeat::Never) |
//! |---|---|---|---|
//! | [not processed](Delivery::NotProcessed): refused locally, never sent, 401/403/429/503/529 | again | again | again |
//! | [answered](Delivery::Answered): another status (a 500, ...) | again | again | no |
//! | [timed out](Delivery::TimedOut) before the response head | again | again (may bill twice) | no |
//! | [unanswered](Delivery::Unanswered): the connection broke after sending | again | only if opted in | no |
//!
//! Whether a failure is worth another attempt at all (a quota that is gone is not) is the retry
//! policy's question; this one only says whether sending the request again is safe.
//!
//! ```
//! use http::Method;
//! use tollgate_core::{Delivery, EndpointKind, Outcome, OutcomeKind, Repeat};
//!
//! let upload = Repeat::of(&Method::POST, EndpointKind::Files, "/v1/files");
//! let chat = Repeat::of(&Method::POST, EndpointKind::ChatCompletions, "/v1/chat/completions");
//! let lost = Delivery::of(&Outcome::new(OutcomeKind::ConnectionLost), false);
//! assert!(!upload.allows(lost, true), "a second upload is a second file");
//! assert!(!chat.allows(lost, false), "a second generation may be billed twice");
//! assert!(chat.allows(lost, true), "unless the caller accepts that");
//!
//! let never_sent = Delivery::of(&Outcome::new(OutcomeKind::ConnectError), false);
//! assert!(upload.allows(never_sent, false));
//! ```

use http::Method;

use crate::{EndpointKind, Outcome, OutcomeKind};

/// What sending a request twice costs, from what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Repeat {
    /// Reads (`GET`, `HEAD`, `OPTIONS`) and free read-only `POST`s (token counting, moderation):
    /// a second copy costs nothing and changes nothing.
    Safe,
    /// Billed calls that leave nothing behind — generation, embeddings: a second copy may be
    /// billed twice. Sent again after an error answer or a timeout (as retries always have);
    /// after a lost connection only when the caller opts in.
    Billed,
    /// Calls that create something — a file upload, a batch — and `POST`s Tollgate does not
    /// know: a second copy may create a second file or batch. Never repeated: sent again only
    /// when the failure proves the first copy was not processed.
    Never,
}

/// Read-only `POST`s that cost nothing, by the end of their path: Anthropic's
/// `/v1/messages/count_tokens`, OpenAI's `/v1/responses/input_tokens` and `/v1/moderations`,
/// Gemini's `:countTokens`, the `/tokenize` and `/detokenize` of OpenAI-compatible servers.
const FREE_READS: [&str; 6] = [
    "/count_tokens",
    "/input_tokens",
    "/moderations",
    ":countTokens",
    "/tokenize",
    "/detokenize",
];

impl Repeat {
    /// The class of a request with `method` to `path`, whose endpoint is `endpoint`
    /// ([`EndpointKind::from_path`] of the path): reads and free read-only `POST`s are
    /// [`Safe`](Self::Safe), generation and embeddings [`Billed`](Self::Billed), anything else
    /// — file uploads, batch creation, unknown endpoints — [`Never`](Self::Never).
    pub fn of(method: &Method, endpoint: EndpointKind, path: &str) -> Self {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Self::Safe;
        }
        match endpoint {
            EndpointKind::Embeddings => Self::Billed,
            endpoint if endpoint.is_generation() => Self::Billed,
            EndpointKind::Other if *method == Method::POST && is_free_read(path) => Self::Safe,
            _ => Self::Never,
        }
    }

    /// The class of a `POST` to `endpoint` when nothing else is known (the default of
    /// [`LlmRequest::new`](crate::LlmRequest::new)).
    pub const fn of_post(endpoint: EndpointKind) -> Self {
        match endpoint {
            EndpointKind::Embeddings => Self::Billed,
            endpoint if endpoint.is_generation() => Self::Billed,
            _ => Self::Never,
        }
    }

    /// The class of `request`: its [`LlmRequest`](crate::LlmRequest)'s
    /// [`repeat`](crate::LlmRequest::repeat) when annotated, else from its method and path.
    pub fn of_request<B>(request: &http::Request<B>) -> Self {
        match request.extensions().get::<crate::LlmRequest>() {
            Some(llm) => llm.repeat,
            None => {
                let path = request.uri().path();
                Self::of(request.method(), EndpointKind::from_path(path), path)
            }
        }
    }

    /// Whether a request of this class may be sent again after an attempt that failed as
    /// `delivery` says. `resend_unanswered`: the caller accepts that a [`Billed`](Self::Billed)
    /// request whose connection broke after sending may be billed twice.
    pub const fn allows(self, delivery: Delivery, resend_unanswered: bool) -> bool {
        match (delivery, self) {
            (Delivery::NotProcessed, _) | (_, Self::Safe) => true,
            (_, Self::Never) => false,
            (Delivery::Unanswered, Self::Billed) => resend_unanswered,
            (Delivery::TimedOut | Delivery::Answered, Self::Billed) => true,
        }
    }
}

fn is_free_read(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    FREE_READS.iter().any(|end| path.ends_with(end))
}

/// What a failed attempt proves about whether the upstream processed the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Delivery {
    /// Surely not processed: a Tollgate layer refused it (nothing was sent), no connection was
    /// made ([`ConnectError`](OutcomeKind::ConnectError)), or the provider turned it away
    /// before doing any work: 401 or 403 (the key), 429 (a rate limit or quota), 503 or 529
    /// (overloaded).
    NotProcessed,
    /// The connection broke after the request may have been sent, before any response
    /// ([`ConnectionLost`](OutcomeKind::ConnectionLost)).
    Unanswered,
    /// No response head in time ([`Timeout`](OutcomeKind::Timeout), a 408 or 504): the
    /// provider may still be working on it.
    TimedOut,
    /// The provider answered with another error (a 500, a 400, ...): it may have done some of
    /// the work.
    Answered,
}

impl Delivery {
    /// What an attempt that failed with `outcome` proves; `refused_locally` when the failure is
    /// a Tollgate layer's refusal ([`is_local_refusal`](crate::classify::is_local_refusal)).
    pub fn of(outcome: &Outcome, refused_locally: bool) -> Self {
        if refused_locally {
            return Self::NotProcessed;
        }
        let turned_away = outcome
            .status
            .is_some_and(|status| matches!(status.as_u16(), 401 | 403 | 429 | 503 | 529));
        match outcome.kind {
            OutcomeKind::ConnectError => Self::NotProcessed,
            _ if turned_away => Self::NotProcessed,
            OutcomeKind::ConnectionLost => Self::Unanswered,
            OutcomeKind::Timeout => Self::TimedOut,
            _ => Self::Answered,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn what_a_request_does_decides_its_class() {
        let cases = [
            (Method::GET, "/v1/models", Repeat::Safe),
            (Method::GET, "/v1/files/file-1/content", Repeat::Safe),
            (Method::GET, "/v1/batches/batch_1", Repeat::Safe),
            (Method::HEAD, "/v1/files", Repeat::Safe),
            (Method::OPTIONS, "/v1/chat/completions", Repeat::Safe),
            (Method::POST, "/v1/messages/count_tokens", Repeat::Safe),
            (Method::POST, "/v1/responses/input_tokens", Repeat::Safe),
            (Method::POST, "/v1/moderations", Repeat::Safe),
            (
                Method::POST,
                "/v1beta/models/gemini-2.0-flash:countTokens",
                Repeat::Safe,
            ),
            (Method::POST, "/v1/chat/completions", Repeat::Billed),
            (Method::POST, "/v1/messages", Repeat::Billed),
            (Method::POST, "/v1/responses", Repeat::Billed),
            (Method::POST, "/v1/completions", Repeat::Billed),
            (Method::POST, "/v1/embeddings", Repeat::Billed),
            (
                Method::POST,
                "/v1beta/models/gemini-2.0-flash:generateContent",
                Repeat::Billed,
            ),
            (
                Method::POST,
                "/openai/deployments/gpt-4o/chat/completions",
                Repeat::Billed,
            ),
            (Method::POST, "/v1/files", Repeat::Never),
            (Method::POST, "/v1/uploads", Repeat::Never),
            (Method::POST, "/v1/uploads/upload_1/parts", Repeat::Never),
            (Method::POST, "/v1/batches", Repeat::Never),
            (Method::POST, "/v1/messages/batches", Repeat::Never),
            (Method::POST, "/v1/fine_tuning/jobs", Repeat::Never),
            (Method::POST, "/v1/anything", Repeat::Never),
            (Method::DELETE, "/v1/files/file-1", Repeat::Never),
        ];
        for (method, path, want) in cases {
            let endpoint = EndpointKind::from_path(path);
            assert_eq!(Repeat::of(&method, endpoint, path), want, "{method} {path}");
        }
        assert_eq!(Repeat::of_post(EndpointKind::Embeddings), Repeat::Billed);
        assert_eq!(Repeat::of_post(EndpointKind::Other), Repeat::Never);
        let unannotated = http::Request::post("https://api.openai.com/v1/files")
            .body(())
            .unwrap();
        assert_eq!(Repeat::of_request(&unannotated), Repeat::Never);
    }

    #[test]
    fn what_a_failure_proves() {
        let with_status = |kind, status: u16| {
            Outcome::new(kind).with_status(StatusCode::from_u16(status).unwrap())
        };
        let cases = [
            (
                Outcome::new(OutcomeKind::ConnectError),
                false,
                Delivery::NotProcessed,
            ),
            (
                Outcome::new(OutcomeKind::Timeout),
                true,
                Delivery::NotProcessed,
            ),
            (
                Outcome::new(OutcomeKind::Overloaded),
                true,
                Delivery::NotProcessed,
            ),
            (
                with_status(OutcomeKind::Overloaded, 503),
                false,
                Delivery::NotProcessed,
            ),
            (
                with_status(OutcomeKind::Overloaded, 529),
                false,
                Delivery::NotProcessed,
            ),
            (
                with_status(OutcomeKind::AuthError, 401),
                false,
                Delivery::NotProcessed,
            ),
            (
                with_status(OutcomeKind::QuotaExhausted, 429),
                false,
                Delivery::NotProcessed,
            ),
            (
                Outcome::new(OutcomeKind::ConnectionLost),
                false,
                Delivery::Unanswered,
            ),
            (
                Outcome::new(OutcomeKind::Timeout),
                false,
                Delivery::TimedOut,
            ),
            (
                with_status(OutcomeKind::Timeout, 504),
                false,
                Delivery::TimedOut,
            ),
            (
                with_status(OutcomeKind::Overloaded, 500),
                false,
                Delivery::Answered,
            ),
            (
                with_status(OutcomeKind::ServerError, 500),
                false,
                Delivery::Answered,
            ),
            (
                with_status(OutcomeKind::ClientError, 409),
                false,
                Delivery::Answered,
            ),
        ];
        for (outcome, local, want) in cases {
            assert_eq!(
                Delivery::of(&outcome, local),
                want,
                "{outcome} local={local}"
            );
        }
    }

    #[test]
    fn never_repeat_calls_go_again_only_when_surely_not_processed() {
        use Delivery::*;
        for delivery in [NotProcessed, Unanswered, TimedOut, Answered] {
            assert!(Repeat::Safe.allows(delivery, false), "{delivery:?}");
            assert_eq!(
                Repeat::Never.allows(delivery, true),
                delivery == NotProcessed,
                "{delivery:?}"
            );
        }
        assert!(Repeat::Billed.allows(NotProcessed, false));
        assert!(Repeat::Billed.allows(Answered, false));
        assert!(Repeat::Billed.allows(TimedOut, false));
        assert!(!Repeat::Billed.allows(Unanswered, false));
        assert!(Repeat::Billed.allows(Unanswered, true));
    }
}
