//! The simulated model: its tokenizer, its answers and its embeddings, all deterministic.
//!
//! The tokenizer is deliberately not the estimator `tollgate-core` uses, so that a client's
//! estimate and the count the simulator reports differ a little, as they do against a real
//! provider, and the reconciliation paths get exercised.

use rand::RngExt as _;
use rand::rngs::SmallRng;
use serde_json::Value;

/// Tokens in `text`: each run of letters or digits is one token per five characters (rounded
/// up), each other visible character one token, whitespace free.
pub(crate) fn count_tokens(text: &str) -> u64 {
    let mut tokens = 0;
    let mut run = 0u64;
    for c in text.chars() {
        if c.is_alphanumeric() {
            run += 1;
        } else {
            tokens += run.div_ceil(5);
            run = 0;
            if !c.is_whitespace() {
                tokens += 1;
            }
        }
    }
    tokens + run.div_ceil(5)
}

/// Prompt tokens of any JSON value: the tokens of every string in it, skipping keys that carry
/// no text, plus framing per message (three, as OpenAI documents) and three to prime the reply.
pub(crate) fn count_prompt(messages: &[&Value]) -> u64 {
    fn walk(value: &Value) -> u64 {
        match value {
            Value::String(s) => count_tokens(s),
            Value::Array(items) => items.iter().map(walk).sum(),
            Value::Object(map) => map
                .iter()
                .filter(|(key, _)| {
                    !matches!(key.as_str(), "type" | "role" | "id" | "cache_control")
                })
                .map(|(_, value)| walk(value))
                .sum(),
            _ => 0,
        }
    }
    let framing = |value: &Value| match value {
        Value::Array(items) => 3 * items.len() as u64,
        _ => 0,
    };
    3 + messages.iter().map(|m| walk(m) + framing(m)).sum::<u64>()
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
    fn prompts_add_framing() {
        let messages = serde_json::json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Hello!"}]},
        ]);
        assert_eq!(count_prompt(&[&messages]), 3 + 6 + 4 + 2);
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
