//! [`CacheStatus`]: how the cache answered a request.

use std::fmt;

/// How the cache answered, in every response's extensions.
///
/// Hits and coalesced answers are also marked with the layer's header
/// (`x-tollgate-cache: hit` / `coalesced` by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// From a stored response (in memory, or in the shared second level); nothing was sent.
    Hit,
    /// Not stored: this request made the upstream call (and its answer may now be stored).
    Miss,
    /// An identical request was in flight: this one shared its call and its answer.
    Coalesced,
    /// The cache let it through: not cacheable, or `cache-control: no-store`.
    Bypass,
}

impl CacheStatus {
    /// `"hit"`, `"miss"`, `"coalesced"` or `"bypass"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Bypass => "bypass",
        }
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
