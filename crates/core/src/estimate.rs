//! Input-token estimates, made before a request is sent.
//!
//! The limiter must reserve tokens before the provider has counted them. An estimate that is
//! a little high costs nothing (the reservation is reconciled from the actual usage when the
//! response ends); one that is far too low lets a burst through that the provider then
//! answers with 429s. The default [`HeuristicEstimator`] is fast and errs high on code and
//! non-English text; the `tiktoken` feature adds [`TiktokenEstimator`] for exact OpenAI counts.

use std::fmt;

/// Counts the tokens of a piece of prompt text.
///
/// [`AnnotateLayer`](crate::annotate::AnnotateLayer) calls it for every text field of a request
/// (message contents, system prompts, tool descriptions, embedding inputs) and adds fixed costs
/// for message framing and images itself.
pub trait TokenEstimator: Send + Sync + 'static {
    /// The number of tokens `text` is expected to take.
    fn count(&self, text: &str) -> u32;
}

/// A fast heuristic: one token per four ASCII bytes, one per non-ASCII character.
///
/// English prose runs at about four characters per token with OpenAI's and Anthropic's
/// tokenizers; code and numbers run a little denser, and CJK text at about one token per
/// character, which the per-character rule for non-ASCII text covers. The count is rounded
/// up, so no text is free. ASCII text, the common case, is counted from its length alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeuristicEstimator;

impl TokenEstimator for HeuristicEstimator {
    fn count(&self, text: &str) -> u32 {
        // Most prompt text is ASCII, and `is_ascii` checks a word at a time.
        let tokens = if text.is_ascii() {
            text.len().div_ceil(4)
        } else {
            let ascii = text.bytes().filter(u8::is_ascii).count();
            let non_ascii_chars = text.chars().count() - ascii;
            ascii.div_ceil(4) + non_ascii_chars
        };
        u32::try_from(tokens).unwrap_or(u32::MAX)
    }
}

/// Exact counts with an OpenAI tokenizer (`o200k_base` by default), through `tiktoken-rs`.
///
/// Accurate for OpenAI models and close for most others; about 50× slower than the heuristic
/// on prose (see the `annotate_classify` bench). Building one loads the tokenizer tables
/// (tens of milliseconds): build it once and share it.
#[cfg(feature = "tiktoken")]
#[cfg_attr(docsrs, doc(cfg(feature = "tiktoken")))]
pub struct TiktokenEstimator {
    bpe: tiktoken_rs::CoreBPE,
}

#[cfg(feature = "tiktoken")]
impl TiktokenEstimator {
    /// The `o200k_base` tokenizer (GPT-4o, GPT-4.1, o-series).
    ///
    /// # Errors
    ///
    /// When the embedded tokenizer tables cannot be loaded.
    pub fn o200k_base() -> Result<Self, crate::BoxError> {
        Ok(Self {
            bpe: tiktoken_rs::o200k_base()?,
        })
    }

    /// The `cl100k_base` tokenizer (GPT-4, GPT-3.5, `text-embedding-3-*`).
    ///
    /// # Errors
    ///
    /// When the embedded tokenizer tables cannot be loaded.
    pub fn cl100k_base() -> Result<Self, crate::BoxError> {
        Ok(Self {
            bpe: tiktoken_rs::cl100k_base()?,
        })
    }
}

#[cfg(feature = "tiktoken")]
impl fmt::Debug for TiktokenEstimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TiktokenEstimator").finish_non_exhaustive()
    }
}

#[cfg(feature = "tiktoken")]
impl TokenEstimator for TiktokenEstimator {
    fn count(&self, text: &str) -> u32 {
        let tokens = self.bpe.encode_ordinary(text).len();
        u32::try_from(tokens).unwrap_or(u32::MAX)
    }
}

/// A boxed estimator, as [`AnnotateLayer`](crate::annotate::AnnotateLayer) stores it.
pub(crate) struct SharedEstimator(pub(crate) std::sync::Arc<dyn TokenEstimator>);

impl Clone for SharedEstimator {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl fmt::Debug for SharedEstimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenEstimator")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_counts() {
        let e = HeuristicEstimator;
        assert_eq!(e.count(""), 0);
        assert_eq!(e.count("a"), 1);
        assert_eq!(e.count("abcd"), 1);
        assert_eq!(e.count("Hello, world!"), 4);
        // Three CJK characters, nine bytes: one token each.
        assert_eq!(e.count("日本語"), 3);
        assert_eq!(e.count("café"), 2);
    }

    #[cfg(feature = "tiktoken")]
    #[test]
    fn tiktoken_counts_exactly() {
        let e = TiktokenEstimator::o200k_base().unwrap();
        assert_eq!(e.count("Hello, world!"), 4);
    }
}
