//! `[prompt_cache]`: prompt caching per key (see the crate's `prompt_cache` module).

use std::time::Duration;

use serde::Deserialize;
use tollgate_core::error::ConfigError;

/// Prompt caching per key, after OpenAI's automatic prompt caching: on by default with
/// OpenAI's rules (1,024 tokens at least, 128-token blocks, five minutes).
///
/// A request whose prompt has at least `min_tokens` tokens reads from its key's cache the
/// longest prefix (a multiple of `block_tokens`, at least `min_tokens`) that the same key
/// served within `ttl`, and reports it as cached: OpenAI's
/// `usage.prompt_tokens_details.cached_tokens` (chat) and
/// `usage.input_tokens_details.cached_tokens` (Responses), Anthropic's
/// `usage.cache_read_input_tokens` (its `input_tokens` then leaves them out, as Anthropic's
/// does), Gemini's `usageMetadata.cachedContentTokenCount`. Keys never share a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptCacheConfig {
    /// Whether prompts are cached at all.
    pub enabled: bool,
    /// The shortest prompt cached, in tokens.
    pub min_tokens: u64,
    /// Prefixes are cut at multiples of this many tokens.
    pub block_tokens: u64,
    /// How long an unused prefix stays cached (each use starts it over).
    #[serde(with = "tollgate_core::config::duration")]
    pub ttl: Duration,
    /// The most prefixes kept per key (one per block of each prompt); the least recently used
    /// are evicted first.
    pub max_entries: usize,
}

impl Default for PromptCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_tokens: 1_024,
            block_tokens: 128,
            ttl: Duration::from_secs(5 * 60),
            max_entries: 10_000,
        }
    }
}

impl PromptCacheConfig {
    /// The most [`max_entries`](Self::max_entries) allowed: a key's cache stays within a few
    /// tens of megabytes.
    const MAX_ENTRIES: usize = 1_000_000;

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.min_tokens == 0 {
            return Err(ConfigError::new(
                "prompt_cache.min_tokens",
                0,
                "must be at least 1",
            ));
        }
        if self.block_tokens == 0 {
            return Err(ConfigError::new(
                "prompt_cache.block_tokens",
                0,
                "must be at least 1",
            ));
        }
        if self.ttl.is_zero() {
            return Err(ConfigError::new(
                "prompt_cache.ttl",
                "0s",
                "must be positive (set enabled = false for no cache)",
            ));
        }
        if !(1..=Self::MAX_ENTRIES).contains(&self.max_entries) {
            return Err(ConfigError::new(
                "prompt_cache.max_entries",
                self.max_entries,
                "must be between 1 and 1000000",
            ));
        }
        Ok(())
    }
}
