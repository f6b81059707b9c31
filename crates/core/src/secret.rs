//! [`Secret`]: an API key that never shows itself.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A credential (an API key, a bearer token). `Debug` prints `Secret(***)`; there is no
/// `Display`; the value is read only through [`expose`](Self::expose), where it is sent.
///
/// ```
/// use tollgate_core::Secret;
///
/// let key = Secret::new("sk-live-123");
/// assert_eq!(format!("{key:?}"), "Secret(***)");
/// assert_eq!(key.expose(), "sk-live-123");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The credential itself, to put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` (a token a client presented) is this secret, in a time that tells an
    /// attacker nothing: both sides are hashed (SHA-256) and the digests compared whole, so
    /// neither where they differ nor the secret's length shows in the timing.
    ///
    /// ```
    /// use tollgate_core::Secret;
    ///
    /// let token = Secret::new("operator-token");
    /// assert!(token.matches(b"operator-token"));
    /// assert!(!token.matches(b"operator-tokem"));
    /// assert!(!token.matches(b"operator"));
    /// ```
    pub fn matches(&self, given: &[u8]) -> bool {
        let ours: [u8; 32] = Sha256::digest(self.0.as_bytes()).into();
        let theirs: [u8; 32] = Sha256::digest(given).into();
        let diff = ours
            .iter()
            .zip(&theirs)
            .fold(0u8, |acc, (a, b)| std::hint::black_box(acc | (a ^ b)));
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_same_bytes() {
        let token = Secret::new("op-token");
        assert!(token.matches(b"op-token"));
        assert!(!token.matches(b"Xp-token"), "first byte");
        assert!(!token.matches(b"op-tokeX"), "last byte");
        assert!(!token.matches(b"op-toke"), "a prefix");
        assert!(!token.matches(b"op-token2"), "longer");
        assert!(!token.matches(b""));
        assert!(Secret::new("").matches(b""));
    }
}
