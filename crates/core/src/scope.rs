//! [`Scope`]: the key every per-key state (rate buckets, breaker, adaptive limit) is kept under.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::Provider;

/// Names a credential without revealing it: a SHA-256 prefix of the secret, or a name the
/// user chose. Safe to log, to put in metrics labels and to share through Redis.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId(Arc<str>);

impl CredentialId {
    /// `key-` and the first 8 bytes of the SHA-256 of `secret`, in hex. The same secret gives
    /// the same id in every process and version, so a fleet agrees on it.
    pub fn from_secret(secret: &[u8]) -> Self {
        let digest = Sha256::digest(secret);
        // Written on the stack: the `Arc` is the id's one allocation (one per request).
        let mut id = *b"key-0000000000000000";
        for (i, byte) in digest[..8].iter().enumerate() {
            id[4 + 2 * i] = HEX[usize::from(byte >> 4)];
            id[5 + 2 * i] = HEX[usize::from(byte & 0x0f)];
        }
        Self(std::str::from_utf8(&id).expect("hex digits").into())
    }

    /// An id chosen by the user (`"team-a"`, `"azure-eastus"`), used as is.
    pub fn named(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialId({})", self.0)
    }
}

/// Provider, credential and model: what one set of limits and one breaker belong to.
///
/// Displayed as `provider/credential/model`, with `-` for an unknown part.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    provider: Provider,
    credential: Option<CredentialId>,
    model: Option<Arc<str>>,
}

impl Scope {
    /// A scope for `provider` with no credential and no model.
    pub const fn new(provider: Provider) -> Self {
        Self {
            provider,
            credential: None,
            model: None,
        }
    }

    /// Sets the credential.
    pub fn with_credential(mut self, credential: Option<CredentialId>) -> Self {
        self.credential = credential;
        self
    }

    /// Sets the model (or model group).
    pub fn with_model(mut self, model: Option<Arc<str>>) -> Self {
        self.model = model;
        self
    }

    /// The provider.
    pub const fn provider(&self) -> Provider {
        self.provider
    }

    /// The credential, if known.
    pub const fn credential(&self) -> Option<&CredentialId> {
        self.credential.as_ref()
    }

    /// The model, if known.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

impl PartialOrd for Provider {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Provider {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credential = self.credential.as_ref().map_or("-", CredentialId::as_str);
        let model = self.model.as_deref().unwrap_or("-");
        write!(f, "{}/{credential}/{model}", self.provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_ids_hide_the_secret_and_are_stable() {
        let secret = b"sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
        let id = CredentialId::from_secret(secret);
        // SHA-256 is fixed, so this value is the same on every machine of a fleet
        // (python3 -c "import hashlib; print(hashlib.sha256(b'sk-proj-...').hexdigest()[:16])").
        assert_eq!(id.as_str(), "key-977b7ec104fb56cc");
        let shown = format!("{id} {id:?}");
        assert!(!shown.contains("sk-proj"), "{shown}");
        assert_ne!(id, CredentialId::from_secret(b"sk-other"));
    }

    #[test]
    fn scope_display() {
        let scope = Scope::new(Provider::OpenAi)
            .with_credential(Some(CredentialId::named("team-a")))
            .with_model(Some("gpt-4o".into()));
        assert_eq!(scope.to_string(), "openai/team-a/gpt-4o");
        assert_eq!(Scope::new(Provider::Anthropic).to_string(), "anthropic/-/-");
    }
}
