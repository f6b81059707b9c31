//! The providers' usage objects, read leniently, and how they map onto [`Usage`].
//!
//! A usage object that is not quite what we expect (a count that is a string, a `message`
//! that is not an object) must not cost the counts that are fine, so every field goes through
//! a deserializer that turns the unexpected into "absent" instead of failing the whole parse
//! ([`super::lenient`]).

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Usage;
use super::lenient::{Count, IsError, Lenient};

/// Every count any provider reports, as last seen; `None` when never seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
}

impl Counts {
    /// Folds in a later usage object: for each count it carries, the later value wins.
    ///
    /// Field by field, so Anthropic's `message_delta` (usually only `output_tokens`) keeps the
    /// input counts of `message_start`.
    pub(super) fn merge(&mut self, later: &Counts) {
        let pairs = [
            (&mut self.prompt_tokens, later.prompt_tokens),
            (&mut self.completion_tokens, later.completion_tokens),
            (&mut self.input_tokens, later.input_tokens),
            (&mut self.output_tokens, later.output_tokens),
            (
                &mut self.cache_creation_input_tokens,
                later.cache_creation_input_tokens,
            ),
            (
                &mut self.cache_read_input_tokens,
                later.cache_read_input_tokens,
            ),
            (&mut self.cached_tokens, later.cached_tokens),
            (&mut self.prompt_token_count, later.prompt_token_count),
            (
                &mut self.candidates_token_count,
                later.candidates_token_count,
            ),
            (&mut self.thoughts_token_count, later.thoughts_token_count),
            (
                &mut self.cached_content_token_count,
                later.cached_content_token_count,
            ),
        ];
        for (slot, value) in pairs {
            if value.is_some() {
                *slot = value;
            }
        }
    }

    /// The normalised usage, `None` when no count was ever seen.
    ///
    /// OpenAI's Responses API and Anthropic share `input_tokens`, but only Anthropic's leaves
    /// the cached tokens out of it; only Anthropic sends the `cache_*_input_tokens` it is added
    /// to, so one sum serves both.
    pub(super) fn usage(&self) -> Option<Usage> {
        let anthropic_input = sum(&[
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ]);
        let gemini_output = sum(&[self.candidates_token_count, self.thoughts_token_count]);
        let input = self
            .prompt_tokens
            .or(anthropic_input)
            .or(self.prompt_token_count);
        let output = self
            .completion_tokens
            .or(self.output_tokens)
            .or(gemini_output);
        let cache_read = self
            .cached_tokens
            .or(self.cache_read_input_tokens)
            .or(self.cached_content_token_count);
        let cache_creation = self.cache_creation_input_tokens;
        if input.is_none() && output.is_none() && cache_read.is_none() && cache_creation.is_none() {
            return None;
        }
        Some(Usage {
            input_tokens: input.unwrap_or(0),
            output_tokens: output.unwrap_or(0),
            cache_read_input_tokens: cache_read.unwrap_or(0),
            cache_creation_input_tokens: cache_creation.unwrap_or(0),
        })
    }
}

/// The sum of the counts present, `None` when none is.
fn sum(counts: &[Option<u64>]) -> Option<u64> {
    counts.iter().flatten().copied().reduce(u64::saturating_add)
}

/// Parses a usage object (the value of a `usage` or `usageMetadata` key).
pub(super) fn parse_usage_object(object: &[u8]) -> Option<Counts> {
    serde_json::from_slice::<RawUsage>(object)
        .ok()
        .map(|raw| raw.counts())
}

/// What one SSE event's data says, when it is a JSON object.
#[derive(Debug, Default)]
pub(super) struct EventFacts {
    /// The usage objects it carries, in the order they are merged.
    pub(super) usage: [Option<Counts>; 4],
    /// A top-level non-null `error`, or `"type": "error"`.
    pub(super) is_error: bool,
}

/// Parses one SSE event's data; `None` when it is not a JSON object.
pub(super) fn parse_event(data: &[u8]) -> Option<EventFacts> {
    let Lenient(event) = serde_json::from_slice::<Lenient<StreamEvent>>(data).ok()?;
    let event = event?;
    let nested = |wrapper: Lenient<Wrapper>| wrapper.0.and_then(|w| w.usage.0);
    Some(EventFacts {
        usage: [
            event.usage.0,
            nested(event.message),
            nested(event.response),
            event.usage_metadata.0,
        ]
        .map(|raw| raw.map(|raw| raw.counts())),
        is_error: event.error.is_some() || event.kind.0,
    })
}

/// The top level of a streamed event: OpenAI chat chunks and Anthropic `message_delta` carry
/// `usage`, Anthropic `message_start` `message.usage`, OpenAI Responses `response.completed`
/// `response.usage`, Gemini chunks `usageMetadata`.
#[derive(Default, Deserialize)]
#[serde(default)]
struct StreamEvent {
    #[serde(rename = "type")]
    kind: IsError,
    error: Option<IgnoredAny>,
    usage: Lenient<RawUsage>,
    message: Lenient<Wrapper>,
    response: Lenient<Wrapper>,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Lenient<RawUsage>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Wrapper {
    usage: Lenient<RawUsage>,
}

/// The union of the providers' usage fields.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawUsage {
    prompt_tokens: Count,
    completion_tokens: Count,
    prompt_tokens_details: Lenient<Details>,
    input_tokens: Count,
    output_tokens: Count,
    input_tokens_details: Lenient<Details>,
    cache_creation_input_tokens: Count,
    cache_read_input_tokens: Count,
    #[serde(rename = "promptTokenCount")]
    prompt_token_count: Count,
    #[serde(rename = "candidatesTokenCount")]
    candidates_token_count: Count,
    #[serde(rename = "thoughtsTokenCount")]
    thoughts_token_count: Count,
    #[serde(rename = "cachedContentTokenCount")]
    cached_content_token_count: Count,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Details {
    cached_tokens: Count,
}

impl RawUsage {
    fn counts(self) -> Counts {
        let cached = |details: Lenient<Details>| details.0.and_then(|d| d.cached_tokens.0);
        Counts {
            prompt_tokens: self.prompt_tokens.0,
            completion_tokens: self.completion_tokens.0,
            input_tokens: self.input_tokens.0,
            output_tokens: self.output_tokens.0,
            cache_creation_input_tokens: self.cache_creation_input_tokens.0,
            cache_read_input_tokens: self.cache_read_input_tokens.0,
            cached_tokens: cached(self.prompt_tokens_details)
                .or_else(|| cached(self.input_tokens_details)),
            prompt_token_count: self.prompt_token_count.0,
            candidates_token_count: self.candidates_token_count.0,
            thoughts_token_count: self.thoughts_token_count.0,
            cached_content_token_count: self.cached_content_token_count.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_values_are_absent_not_fatal() {
        let counts = parse_usage_object(
            br#"{"prompt_tokens":"12","completion_tokens":7.0,"prompt_tokens_details":[1],
                "input_tokens_details":{"cached_tokens":3},"cache_read_input_tokens":-1,
                "promptTokenCount":null,"candidatesTokenCount":{"a":[1,{"b":2}]}}"#,
        )
        .unwrap();
        assert_eq!(counts.prompt_tokens, None);
        assert_eq!(counts.completion_tokens, Some(7));
        assert_eq!(counts.cached_tokens, Some(3));
        assert_eq!(counts.cache_read_input_tokens, None);
        assert_eq!(
            counts.usage(),
            Some(Usage {
                cache_read_input_tokens: 3,
                ..Usage::new(0, 7)
            })
        );
        assert_eq!(parse_usage_object(b"{}").unwrap().usage(), None);
        assert!(parse_usage_object(b"{\"prompt_tokens\":1").is_none());
    }

    #[test]
    fn event_shapes() {
        let facts = parse_event(br#"{"type":"error","message":"not an object"}"#).unwrap();
        assert!(facts.is_error);
        assert!(
            !parse_event(br#"{"error":null,"usage":null}"#)
                .unwrap()
                .is_error
        );
        assert!(parse_event(br#"{"error":"boom"}"#).unwrap().is_error);
        assert!(parse_event(b"[DONE]").is_none());
        assert!(parse_event(b"\"usage\"").is_none());
    }
}
