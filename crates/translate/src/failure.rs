//! An upstream's refusal in neutral form, so that it reaches the client in the client's own
//! error shape and status, and the client's SDK raises the exception it would have raised
//! against its own provider (a rate limit as a rate limit, an overload as an overload).

/// What kind of refusal it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The request is wrong.
    InvalidRequest,
    /// The prompt does not fit the model's context window.
    ContextLength,
    /// The credential was refused.
    Authentication,
    /// The credential may not do this.
    Permission,
    /// No such model or route.
    NotFound,
    /// The request is too large to accept.
    TooLarge,
    /// A rate limit: waiting helps.
    RateLimited,
    /// The account's quota or credit is spent: waiting does not help.
    QuotaExhausted,
    /// The provider sheds load.
    Overloaded,
    /// The provider failed.
    Server,
}

impl FailureKind {
    /// The kind an HTTP status says, when the body says nothing more precise.
    pub fn from_status(status: u16) -> Self {
        match status {
            401 => Self::Authentication,
            403 => Self::Permission,
            404 => Self::NotFound,
            413 => Self::TooLarge,
            429 => Self::RateLimited,
            503 | 529 => Self::Overloaded,
            500..=599 => Self::Server,
            _ => Self::InvalidRequest,
        }
    }
}

/// An upstream's refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its kind.
    pub kind: FailureKind,
    /// The upstream's own words.
    pub message: String,
}
