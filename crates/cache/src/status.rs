//! [`CacheStatus`]: how the cache answered a request.

use std::fmt;
use std::time::Duration;

/// How the cache answered, in every response's extensions.
///
/// Hits, coalesced and stale answers are also marked with the layer's header
/// (`x-tollgate-cache: hit` / `coalesced` / `stale` by default).
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
    /// From a stored response served by a [stale lookup](crate::CacheHandle::stale_lookup)
    /// because the upstream was unavailable: possibly past its time to live.
    Stale {
        /// How long ago it was stored (also in the `age` header, in whole seconds).
        age: Duration,
    },
}

impl CacheStatus {
    /// `"hit"`, `"miss"`, `"coalesced"`, `"bypass"` or `"stale"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Bypass => "bypass",
            Self::Stale { .. } => "stale",
        }
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
