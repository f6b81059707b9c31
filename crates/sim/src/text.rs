//! The simulated model: its tokenizer, its answers and its embeddings, all deterministic.
//!
//! The tokenizer is deliberately not the estimator `tollgate-core` uses, so that a client's
//! estimate and the count the simulator reports differ a little, as they do against a real
//! provider, and the reconciliation paths get exercised.

use rand::RngExt as _;
use rand::rngs::SmallRng;
use serde_json::Value;

/// Calls `token_end` with the byte offset just past each token of `text`, in order: each run
/// of letters or digits is one token per five characters (the last one shorter), each other
/// visible character one token, whitespace free. [`count_tokens`] counts these tokens; the
/// prompt cache cuts prompts at them.
pub(crate) fn token_ends(text: &str, mut token_end: impl FnMut(usize)) {
    let mut run = 0u64;
    for (at, c) in text.char_indices() {
        if c.is_alphanumeric() {
            run += 1;
            if run.is_multiple_of(5) {
                token_end(at + c.len_utf8());
            }
        } else {
            if !run.is_multiple_of(5) {
                token_end(at);
            }
            run = 0;
            if !c.is_whitespace() {
                token_end(at + c.len_utf8());
            }
        }
    }
    if !run.is_multiple_of(5) {
        token_end(text.len());
    }
}

/// Tokens in `text` (see [`token_ends`]).
pub(crate) fn count_tokens(text: &str) -> u64 {
    let mut tokens = 0;
    token_ends(text, |_| tokens += 1);
    tokens
}

/// One token of a message's framing: a visible character that is not a letter or a digit.
const FRAME: char = '\u{1}';

/// A prompt as the simulated model reads it, in order: three framing tokens to prime the reply,
/// then each part's strings, skipping keys that carry no text; each item of a part that is an
/// array (the messages, the tools) is preceded by three framing tokens, as OpenAI documents.
/// Its [`count_tokens`] are the prompt tokens, and its prefixes are what the prompt cache
/// matches, so parts go in the providers' caching order: tools, system, messages.
pub(crate) fn prompt(parts: &[&Value]) -> String {
    fn walk(value: &Value, out: &mut String) {
        match value {
            Value::String(s) => {
                out.push_str(s);
                // Whitespace is free and ends a run, so strings never merge into one token.
                out.push(' ');
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            Value::Object(map) => map
                .iter()
                .filter(|(key, _)| {
                    !matches!(key.as_str(), "type" | "role" | "id" | "cache_control")
                })
                .for_each(|(_, value)| walk(value, out)),
            _ => {}
        }
    }
    let mut out = String::from_iter([FRAME; 3]);
    for part in parts {
        match part {
            Value::Array(items) => {
                for item in items {
                    out.extend([FRAME; 3]);
                    walk(item, &mut out);
                }
            }
            other => walk(other, &mut out),
        }
    }
    out
}

const WORDS: [&str; 48] = [
    "the", "model", "answers", "with", "care", "and", "a", "little", "delay", "tokens", "flow",
    "through", "every", "layer", "of", "tollgate", "while", "limits", "hold", "steady", "under",
    "load", "requests", "wait", "their", "turn", "streams", "end", "cleanly", "errors", "are",
    "typed", "retries", "back", "off", "budgets", "keep", "storms", "away", "keys", "rotate",
    "queues", "drain", "caches", "warm", "batches", "save", "money",
];

/// An answer of `tokens` words (one token each), chosen by `rng`.
pub(crate) fn answer(tokens: u32, rng: &mut SmallRng) -> Vec<&'static str> {
    (0..tokens)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect()
}

/// A unit-length vector for `input`, the same for the same input and seed.
pub(crate) fn embedding(input: &str, dimensions: u32, seed: u64) -> Vec<f32> {
    // FNV-1a: a fixed, dependency-free hash so vectors never change between versions.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for byte in input.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut rng = <SmallRng as rand::SeedableRng>::seed_from_u64(hash);
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let norm = vector
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    for x in &mut vector {
        *x /= norm;
    }
    vector
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn tokens_count_words_and_punctuation() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("Hello!"), 2);
        assert_eq!(count_tokens("You are terse."), 4);
        assert_eq!(count_tokens("internationalization"), 4);
        assert_eq!(count_tokens("日本語"), 1);
    }

    #[test]
    fn token_ends_cut_runs_every_five_characters() {
        let mut ends = Vec::new();
        token_ends("internationalization, ok", |end| ends.push(end));
        assert_eq!(ends, [5, 10, 15, 20, 21, 24]);
    }

    #[test]
    fn prompts_add_framing() {
        let messages = serde_json::json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Hello!"}]},
        ]);
        assert_eq!(count_tokens(&prompt(&[&messages])), 3 + 6 + 4 + 2);
        let tools = serde_json::json!([{"type": "function", "name": "lookup"}]);
        assert_eq!(
            count_tokens(&prompt(&[&tools, &messages])),
            3 + 3 + 2 + 6 + 4 + 2
        );
    }

    #[test]
    fn answers_and_embeddings_repeat_under_a_seed() {
        let a = answer(10, &mut SmallRng::seed_from_u64(1));
        let b = answer(10, &mut SmallRng::seed_from_u64(1));
        assert_eq!(a, b);
        assert_eq!(a.len(), 10);
        let v = embedding("hello", 8, 7);
        assert_eq!(v, embedding("hello", 8, 7));
        assert_ne!(v, embedding("hello", 8, 8));
        let norm: f32 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
