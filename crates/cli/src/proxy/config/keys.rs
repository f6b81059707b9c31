//! Keys and tokens in the config: the gateway's client keys, the admin and metrics tokens.
//! Each is wrapped as a [`Secret`] as soon as it is read, and never echoed in an error.

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use tollgate::ConfigError;
use tollgate_core::Secret;

use super::invalid;

/// A key in the file, wrapped as soon as it is read.
#[derive(Debug)]
pub(super) struct Key(pub(super) Secret);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|key| Self(Secret::new(key)))
    }
}

/// The client keys, kept only as SHA-256 digests.
#[derive(Clone)]
pub(crate) struct ClientKeys(Vec<[u8; 32]>);

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKeys({} keys)", self.0.len())
    }
}

impl ClientKeys {
    pub(crate) fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self(keys.into_iter().map(|k| Sha256::digest(k).into()).collect())
    }

    /// Whether clients must present a key.
    pub(crate) fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// How many keys there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Which key `token` is, if any. The time taken does not depend on which key matched or
    /// on how much of one did: digests are compared whole, every one of them.
    pub(crate) fn find(&self, token: &[u8]) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found = usize::MAX;
        for (i, key) in self.0.iter().enumerate() {
            let diff = key
                .iter()
                .zip(&digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            let matched = usize::from(std::hint::black_box(diff) == 0);
            // i where matched, found otherwise, without a branch on the secret.
            found = (found & matched.wrapping_sub(1)) | (i & matched.wrapping_neg());
        }
        (found != usize::MAX).then_some(found)
    }

    /// Whether `token` is one of the keys.
    pub(crate) fn admits(&self, token: &[u8]) -> bool {
        self.find(token).is_some()
    }

    /// A name for key `index` that says nothing about the key: a prefix of its digest's
    /// digest. Used as the cache's tenant, so each key has cached answers of its own.
    pub(crate) fn tenant(&self, index: usize) -> String {
        let digest = Sha256::digest(self.0[index]);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A token set in the file (`field`) or in the variable another field names (`env_field`);
/// not both, never empty.
pub(super) fn token(
    field: &str,
    env_field: &str,
    literal: Option<Key>,
    env_name: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    let token = match (literal, env_name) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                field,
                format!("set {} or {}, not both", leaf(field), leaf(env_field)),
            ));
        }
        (Some(Key(token)), None) => token,
        (None, Some(name)) => {
            let value = env(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                invalid(
                    env_field,
                    format!("the environment variable {name:?} is not set (or is empty)"),
                )
            })?;
            Secret::new(value.trim())
        }
        (None, None) => return Ok(None),
    };
    if token.expose().trim().is_empty() {
        return Err(invalid(field, "an empty token is not allowed"));
    }
    Ok(Some(token))
}

fn leaf(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_by_its_index_and_named_by_a_digest_only() {
        let keys = ClientKeys::new(["tg-a", "tg-b", "tg-c"]);
        assert_eq!(keys.find(b"tg-a"), Some(0));
        assert_eq!(keys.find(b"tg-c"), Some(2));
        assert_eq!(keys.find(b"tg-d"), None);
        assert_eq!(keys.find(b""), None);
        let tenants: Vec<_> = (0..3).map(|i| keys.tenant(i)).collect();
        assert_eq!(tenants[0].len(), 16);
        assert_ne!(tenants[0], tenants[1]);
        assert_eq!(tenants[0], ClientKeys::new(["tg-a"]).tenant(0), "stable");
        assert!(!format!("{keys:?}").contains("tg-a"));
    }
}
