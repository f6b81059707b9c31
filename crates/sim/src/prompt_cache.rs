//! Prompt caching per key, after OpenAI's automatic prompt caching.
//!
//! Why simulate it? A provider that caches prompt prefixes serves a repeated prefix cheaper
//! and faster, but only on the machine that saw it: the cache is not shared, so where a
//! client sends a request decides whether it hits. Here each API key has its own cache, as if
//! each key were served by its own machines; keys of one account share nothing. A router that
//! sends the requests of one conversation (one long shared prefix) to the same key gets its
//! cached tokens; one that spreads them over keys does not. That share is measurable in
//! [`SimStats::cached_share`](crate::SimStats::cached_share).
//!
//! The rules are OpenAI's: a prompt of at least `min_tokens` tokens is cut at every multiple
//! of `block_tokens` from `min_tokens` on; each cut is a prefix, identified by a hash of the
//! model and the prompt's text up to the cut (the prompt as
//! [`text::prompt`](crate::text::prompt) reads it: tools, system, messages, in order). A
//! request reads from the cache the longest of its prefixes the same key served within `ttl`
//! (a use refreshes a prefix), and stores all of its prefixes. At most `max_entries` prefixes
//! are kept per key, the least recently used evicted first, and among those used at the same
//! instant the longest first (a shorter prefix is shared by more requests).
//!
//! A request is cached when it is admitted, so a request admitted while an identical one is
//! still generating hits too. Cached tokens count toward every rate limit like any other.

use std::collections::{BTreeMap, HashMap};

use tokio::time::Instant;

use crate::config::PromptCacheConfig;
use crate::text::token_ends;

/// One cut of a prompt: its length in tokens and the hash that identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prefix {
    tokens: u64,
    hash: u64,
}

/// What one request did with the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cached {
    /// Prompt tokens read from the cache (the longest prefix found).
    pub(crate) read: u64,
    /// Prompt tokens written to the cache beyond those read (the longest prefix stored).
    pub(crate) written: u64,
}

/// The prefixes of `prompt` (of `tokens` tokens) for `model`, shortest first; none when caching
/// is off or the prompt is shorter than `min_tokens`.
pub(crate) fn prefixes(
    model: &str,
    prompt: &str,
    tokens: u64,
    config: &PromptCacheConfig,
) -> Vec<Prefix> {
    if !config.enabled || tokens < config.min_tokens {
        return Vec::new();
    }
    let bytes = prompt.as_bytes();
    let mut hash = fnv1a(fnv1a(FNV_OFFSET, model.as_bytes()), &[0xFF]);
    let (mut hashed, mut count) = (0, 0);
    let mut prefixes = Vec::new();
    token_ends(prompt, |end| {
        count += 1;
        if count >= config.min_tokens && count.is_multiple_of(config.block_tokens) {
            hash = fnv1a(hash, &bytes[hashed..end]);
            hashed = end;
            prefixes.push(Prefix {
                tokens: count,
                hash,
            });
        }
    });
    prefixes
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, continued from `hash`: the hash of a prefix goes on into the next one.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// When a prefix was last used, and a counter that orders uses at the same instant.
type Stamp = (Instant, u64);

/// One key's cache: the prefixes it served, with their last use.
#[derive(Debug, Default)]
pub(crate) struct PromptCache {
    last_use: HashMap<u64, Stamp>,
    /// The same prefixes, least recently used first.
    by_age: BTreeMap<Stamp, u64>,
    uses: u64,
}

impl PromptCache {
    /// Reads the longest of `prefixes` still cached, then stores (or refreshes) every one.
    pub(crate) fn serve(
        &mut self,
        prefixes: &[Prefix],
        now: Instant,
        config: &PromptCacheConfig,
    ) -> Cached {
        if prefixes.is_empty() {
            return Cached::default();
        }
        self.expire(now, config);
        let read = prefixes
            .iter()
            .rev()
            .find(|prefix| self.last_use.contains_key(&prefix.hash))
            .map_or(0, |prefix| prefix.tokens);
        let longest = prefixes.last().map_or(0, |prefix| prefix.tokens);
        // Longest first: at one instant, the longest is the first to go.
        for prefix in prefixes.iter().rev() {
            let stamp = (now, self.uses);
            self.uses += 1;
            if let Some(old) = self.last_use.insert(prefix.hash, stamp) {
                self.by_age.remove(&old);
            }
            self.by_age.insert(stamp, prefix.hash);
        }
        while self.last_use.len() > config.max_entries {
            let Some((_, hash)) = self.by_age.pop_first() else {
                break;
            };
            self.last_use.remove(&hash);
        }
        Cached {
            read,
            written: longest - read,
        }
    }

    /// Forgets the prefixes unused for `ttl`.
    fn expire(&mut self, now: Instant, config: &PromptCacheConfig) {
        while let Some((&(used, _), &hash)) = self.by_age.first_key_value() {
            if used + config.ttl > now {
                break;
            }
            self.by_age.pop_first();
            self.last_use.remove(&hash);
        }
    }

    /// How many prefixes it holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.last_use.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(min_tokens: u64, block_tokens: u64, max_entries: usize) -> PromptCacheConfig {
        PromptCacheConfig {
            min_tokens,
            block_tokens,
            max_entries,
            ..PromptCacheConfig::default()
        }
    }

    fn cut(prompt: &str, config: &PromptCacheConfig) -> Vec<Prefix> {
        prefixes("m", prompt, crate::text::count_tokens(prompt), config)
    }

    #[test]
    fn prompts_are_cut_at_blocks_from_the_minimum_on() {
        let config = config(4, 2, 100);
        let tokens: Vec<u64> = cut("a b c d e f g h i", &config)
            .iter()
            .map(|p| p.tokens)
            .collect();
        assert_eq!(tokens, [4, 6, 8]);
        assert!(cut("a b c", &config).is_empty(), "under the minimum");
        let off = PromptCacheConfig {
            enabled: false,
            ..config
        };
        assert!(cut("a b c d e f", &off).is_empty());
        let same = cut("a b c d x", &config);
        assert_eq!(same[0], cut("a b c d y y", &config)[0], "one prefix");
        assert_ne!(
            same[0],
            prefixes("n", "a b c d x", 5, &config)[0],
            "per model"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_fresh_prefix_is_read_and_every_prefix_stored() {
        let config = config(2, 2, 100);
        let mut cache = PromptCache::default();
        let now = Instant::now();
        let first = cache.serve(&cut("a b c d e f", &config), now, &config);
        assert_eq!(
            first,
            Cached {
                read: 0,
                written: 6
            }
        );
        let second = cache.serve(&cut("a b c d x y", &config), now, &config);
        assert_eq!(
            second,
            Cached {
                read: 4,
                written: 2
            }
        );
        let later = now + config.ttl;
        let expired = cache.serve(&cut("a b c d e f", &config), later, &config);
        assert_eq!(expired.read, 0, "nothing used for the ttl stays");
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_entries_the_least_recently_used_go_first() {
        let config = config(1, 1, 3);
        let mut cache = PromptCache::default();
        let now = Instant::now();
        cache.serve(&cut("a b", &config), now, &config);
        let later = now + Duration::from_secs(1);
        cache.serve(&cut("x y", &config), later, &config);
        assert_eq!(cache.len(), 3, "\"a b\" went: the least recently used");
        assert_eq!(cache.serve(&cut("a b", &config), later, &config).read, 1);
        assert_eq!(cache.len(), 3, "\"x y\" went: used with \"x\", and longer");
        assert_eq!(cache.serve(&cut("x y", &config), later, &config).read, 1);
    }
}
