//! What happened to one upstream call, in the words every layer shares.
//!
//! [`crate::classify`] turns a response (status, headers, a peek at the error body) or a
//! transport error into one [`Outcome`]. The retry layer asks [`Outcome::is_retryable`], the
//! breaker counts failures, the limiter reads the [`RateLimitDimension`] and `retry_after`;
//! nobody re-derives them from status codes.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// The kind of an [`Outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// A 2xx response (a stream can still end with an error event; see [`crate::body`]).
    Success,
    /// A 429 that will succeed later: the provider's per-minute limit on one dimension.
    RateLimited(RateLimitDimension),
    /// The account is out of quota (`insufficient_quota`, a Gemini per-day quota): retrying
    /// before the reset cannot succeed.
    QuotaExhausted,
    /// The request alone exceeds a limit (413, OpenAI "Request too large"): it can never succeed.
    RequestTooLarge,
    /// The prompt does not fit the model's context window.
    ContextLengthExceeded,
    /// The provider is overloaded (Anthropic 529 `overloaded_error`, a 500 "Overloaded", a 503).
    Overloaded,
    /// Any other 5xx.
    ServerError,
    /// The call took too long (a timeout layer, 408, 504).
    Timeout,
    /// The request was never sent: no connection could be made (refused, no address, a DNS
    /// failure, a URL the client cannot use), or the client handed the request back unsent.
    /// The provider never saw it, so sending it again is always safe.
    ConnectError,
    /// The connection broke after the request may have been sent and before a response
    /// arrived (a reset, a broken pipe, a connection closed with no answer, or a transport
    /// error Tollgate does not recognise). The provider may have processed — and billed — the
    /// request; see [`Repeat`](crate::Repeat) for when it is sent again.
    ConnectionLost,
    /// The credential was refused (401, 403).
    AuthError,
    /// Any other 4xx: the request itself is wrong.
    ClientError,
}

impl OutcomeKind {
    /// The stable snake_case name (`"rate_limited"`, `"quota_exhausted"`, ...), used in logs,
    /// metrics labels and the `tollgate classify --json` output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::RateLimited(_) => "rate_limited",
            Self::QuotaExhausted => "quota_exhausted",
            Self::RequestTooLarge => "request_too_large",
            Self::ContextLengthExceeded => "context_length_exceeded",
            Self::Overloaded => "overloaded",
            Self::ServerError => "server_error",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
            Self::ConnectionLost => "connection_lost",
            Self::AuthError => "auth_error",
            Self::ClientError => "client_error",
        }
    }

    /// Whether an attempt with this outcome is worth retrying when nothing else is known:
    /// rate limited, overloaded, server error, timeout, connect error and connection lost are;
    /// nothing else is. Whether the request may be *sent again* is another question, which
    /// [`Repeat`](crate::Repeat) answers from what the request does.
    pub const fn is_retryable_by_default(self) -> bool {
        matches!(
            self,
            Self::RateLimited(_)
                | Self::Overloaded
                | Self::ServerError
                | Self::Timeout
                | Self::ConnectError
                | Self::ConnectionLost
        )
    }

    /// Whether retrying can never help, whatever the provider's `x-should-retry` says:
    /// quota exhausted, request too large, context length exceeded, auth error.
    pub const fn is_permanent(self) -> bool {
        matches!(
            self,
            Self::QuotaExhausted
                | Self::RequestTooLarge
                | Self::ContextLengthExceeded
                | Self::AuthError
        )
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RateLimited(dimension) => write!(f, "rate_limited ({dimension})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Which limit a 429 hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateLimitDimension {
    /// Requests per minute (or per day, for Groq).
    Requests,
    /// Tokens per minute, input and output together.
    Tokens,
    /// Input tokens per minute (Anthropic, Gemini).
    InputTokens,
    /// Output tokens per minute (Anthropic).
    OutputTokens,
    /// The provider did not say.
    Unknown,
}

impl RateLimitDimension {
    /// The stable snake_case name: `"requests"`, `"tokens"`, `"input_tokens"`, `"output_tokens"`,
    /// `"unknown"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::InputTokens => "input_tokens",
            Self::OutputTokens => "output_tokens",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for RateLimitDimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The classified result of one upstream call; stored in the response extensions by
/// [`ClassifyLayer`](crate::classify::ClassifyLayer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What happened.
    pub kind: OutcomeKind,
    /// The HTTP status, when there was a response.
    pub status: Option<StatusCode>,
    /// How long the provider asked us to wait (`retry-after-ms`, `retry-after`, Gemini's
    /// `RetryInfo`, OpenAI's "Please try again in 1.146s", ...).
    pub retry_after: Option<Duration>,
    /// The provider's `x-should-retry` header, when sent.
    pub should_retry: Option<bool>,
    /// For a rate-limited outcome, the window the limit counts over when the refusal names it
    /// (Gemini's `…PerMinute…` quota ids): what a limit learned from it is measured over.
    pub rate_limit_window: Option<Duration>,
}

impl Outcome {
    /// An outcome of `kind` with nothing else known.
    pub const fn new(kind: OutcomeKind) -> Self {
        Self {
            kind,
            status: None,
            retry_after: None,
            should_retry: None,
            rate_limit_window: None,
        }
    }

    /// A success with no status.
    pub const fn success() -> Self {
        Self::new(OutcomeKind::Success)
    }

    /// Sets the HTTP status.
    pub const fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets how long the provider asked to wait.
    pub const fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Sets the provider's `x-should-retry` verdict.
    pub const fn with_should_retry(mut self, should_retry: Option<bool>) -> Self {
        self.should_retry = should_retry;
        self
    }

    /// Sets the window the violated limit counts over.
    pub const fn with_rate_limit_window(mut self, window: Option<Duration>) -> Self {
        self.rate_limit_window = window;
        self
    }

    /// Whether the call succeeded.
    pub const fn is_success(&self) -> bool {
        matches!(self.kind, OutcomeKind::Success)
    }

    /// The dimension of a rate-limited outcome.
    pub const fn dimension(&self) -> Option<RateLimitDimension> {
        match self.kind {
            OutcomeKind::RateLimited(dimension) => Some(dimension),
            _ => None,
        }
    }

    /// Whether another attempt can succeed.
    ///
    /// `x-should-retry: false` always wins. `x-should-retry: true` makes any failure retryable
    /// except the [permanent](OutcomeKind::is_permanent) ones: a retry of an exhausted quota or
    /// an oversize request only costs money. Without the header, the
    /// [default rule](OutcomeKind::is_retryable_by_default) decides.
    pub const fn is_retryable(&self) -> bool {
        match (self.kind, self.should_retry) {
            (OutcomeKind::Success, _) => false,
            (_, Some(false)) => false,
            (kind, Some(true)) => !kind.is_permanent(),
            (kind, None) => kind.is_retryable_by_default(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)?;
        if let Some(status) = self.status {
            write!(f, ", status {}", status.as_u16())?;
        }
        if let Some(wait) = self.retry_after {
            write!(f, ", retry after {wait:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_defaults_and_overrides() {
        let limited = Outcome::new(OutcomeKind::RateLimited(RateLimitDimension::Tokens));
        assert!(limited.is_retryable());
        assert!(
            !limited
                .clone()
                .with_should_retry(Some(false))
                .is_retryable()
        );

        let conflict = Outcome::new(OutcomeKind::ClientError).with_status(StatusCode::CONFLICT);
        assert!(!conflict.is_retryable());
        assert!(conflict.with_should_retry(Some(true)).is_retryable());

        let quota = Outcome::new(OutcomeKind::QuotaExhausted).with_should_retry(Some(true));
        assert!(
            !quota.is_retryable(),
            "a provider cannot talk us into paying for a dead quota"
        );
        assert!(
            !Outcome::success()
                .with_should_retry(Some(true))
                .is_retryable()
        );
    }

    #[test]
    fn names_are_snake_case() {
        assert_eq!(
            OutcomeKind::RateLimited(RateLimitDimension::InputTokens).as_str(),
            "rate_limited"
        );
        assert_eq!(
            OutcomeKind::ContextLengthExceeded.as_str(),
            "context_length_exceeded"
        );
        assert_eq!(RateLimitDimension::OutputTokens.as_str(), "output_tokens");
        let shown = Outcome::new(OutcomeKind::Overloaded)
            .with_status(StatusCode::from_u16(529).unwrap())
            .with_retry_after(Some(Duration::from_millis(1500)))
            .to_string();
        assert_eq!(shown, "overloaded, status 529, retry after 1.5s");
    }
}
