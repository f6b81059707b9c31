//! One pass over a JSON request body: the few fields the layers need, and the text to
//! estimate input tokens from. Everything else is skipped without being materialised.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::LlmRequest;
use crate::estimate::TokenEstimator;

/// Tokens assumed per image, audio clip or inline file: about what a 1024×1024 image costs at
/// OpenAI's high detail (765) and Anthropic's (~1,400). Reconciled from actual usage later.
pub(crate) const MEDIA_TOKENS: u32 = 1_000;

/// Tokens of framing per message (role markers and separators), as OpenAI documents for its
/// chat format.
pub(crate) const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

/// What the body said. Kept apart from [`LlmRequest`] so that a parse error can discard it.
#[derive(Default)]
pub(crate) struct BodyFields {
    pub(crate) model: Option<Arc<str>>,
    pub(crate) max_output_tokens: Option<u32>,
    pub(crate) stream: Option<bool>,
    pub(crate) include_usage: bool,
    pub(crate) temperature: Option<f32>,
    pub(crate) seed: Option<i64>,
    pub(crate) n: Option<u32>,
    pub(crate) inputs: Option<u32>,
    pub(crate) tokens: u64,
}

impl BodyFields {
    /// Parses `body`; `None` when it is not a JSON object.
    pub(crate) fn parse(body: &[u8], estimator: &dyn TokenEstimator) -> Option<Self> {
        let mut fields = Self::default();
        let mut de = serde_json::Deserializer::from_slice(body);
        TopLevel {
            fields: &mut fields,
            estimator,
        }
        .deserialize(&mut de)
        .ok()?;
        de.end().ok()?;
        Some(fields)
    }

    /// Copies what the body said into `request`.
    pub(crate) fn apply(self, request: &mut LlmRequest) {
        request.json_body = true;
        if request.model.is_none() {
            request.model = self.model;
        }
        request.max_output_tokens = self.max_output_tokens;
        request.stream |= self.stream.unwrap_or(false);
        request.stream_include_usage = self.include_usage;
        request.temperature = self.temperature;
        request.seed = self.seed;
        request.n = self.n;
        if request.endpoint == crate::EndpointKind::Embeddings {
            request.embedding_inputs = self.inputs;
        }
        request.input_tokens_estimate = u32::try_from(self.tokens).unwrap_or(u32::MAX);
    }
}

/// A JSON scalar of any type, or `Other` for arrays and objects (which are skipped).
enum Scalar {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
    Other,
}

impl Scalar {
    fn as_u32(&self) -> Option<u32> {
        match *self {
            Self::Unsigned(v) => Some(u32::try_from(v).unwrap_or(u32::MAX)),
            Self::Signed(v) if v >= 0 => Some(u32::try_from(v).unwrap_or(u32::MAX)),
            // `1024.0` is a common way to write an integer in generated JSON.
            Self::Float(v) if v >= 0.0 && v.fract() == 0.0 => {
                Some(v.min(f64::from(u32::MAX)) as u32)
            }
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::Unsigned(v) => i64::try_from(v).ok(),
            Self::Signed(v) => Some(v),
            _ => None,
        }
    }

    fn as_f32(&self) -> Option<f32> {
        match *self {
            Self::Unsigned(v) => Some(v as f32),
            Self::Signed(v) => Some(v as f32),
            Self::Float(v) => Some(v as f32),
            _ => None,
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }
}

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Signed(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_str<E>(self, _: &str) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// A string value, kept; anything else, skipped.
struct ModelName(Option<Arc<str>>);

impl<'de> de::Deserialize<'de> for ModelName {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a model name")
            }
            fn visit_str<E>(self, v: &str) -> Result<ModelName, E> {
                Ok(ModelName(Some(v.into())))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ModelName, E> {
                Ok(ModelName(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ModelName, E> {
                Ok(ModelName(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ModelName, E> {
                Ok(ModelName(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ModelName, E> {
                Ok(ModelName(None))
            }
            fn visit_unit<E>(self) -> Result<ModelName, E> {
                Ok(ModelName(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ModelName, A::Error> {
                ScalarVisitor.visit_seq(seq).map(|_| ModelName(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelName, A::Error> {
                ScalarVisitor.visit_map(map).map(|_| ModelName(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Top-level keys the walker acts on; matched without allocating.
enum Key {
    Model,
    MaxOutputTokens,
    Stream,
    StreamOptions,
    IncludeUsage,
    Temperature,
    Seed,
    Choices,
    GenerationConfig,
    /// `input` (embeddings and the Responses API) and Gemini's batch `requests`.
    Inputs,
    /// Fields whose text is part of the prompt.
    Text,
    Other,
}

impl Key {
    fn from_name(name: &str) -> Self {
        match name {
            "model" => Self::Model,
            "max_tokens" | "max_completion_tokens" | "max_output_tokens" | "maxOutputTokens" => {
                Self::MaxOutputTokens
            }
            "stream" => Self::Stream,
            "stream_options" => Self::StreamOptions,
            "include_usage" => Self::IncludeUsage,
            "temperature" => Self::Temperature,
            "seed" => Self::Seed,
            "n" | "candidateCount" | "candidate_count" => Self::Choices,
            "generationConfig" | "generation_config" => Self::GenerationConfig,
            "input" | "requests" => Self::Inputs,
            "messages" | "system" | "prompt" | "instructions" | "contents" | "content"
            | "systemInstruction" | "system_instruction" | "tools" | "functions" => Self::Text,
            _ => Self::Other,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key::from_name(v))
            }
        }
        deserializer.deserialize_identifier(V)
    }
}

/// The top-level object (and nested option objects such as `generationConfig`).
struct TopLevel<'a> {
    fields: &'a mut BodyFields,
    estimator: &'a dyn TokenEstimator,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Self { fields, estimator } = self;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Model => fields.model = map.next_value::<ModelName>()?.0,
                Key::MaxOutputTokens => {
                    fields.max_output_tokens = map.next_value::<Scalar>()?.as_u32();
                }
                Key::Stream => fields.stream = map.next_value::<Scalar>()?.as_bool(),
                Key::IncludeUsage => {
                    fields.include_usage = map.next_value::<Scalar>()?.as_bool() == Some(true);
                }
                Key::Temperature => fields.temperature = map.next_value::<Scalar>()?.as_f32(),
                Key::Seed => fields.seed = map.next_value::<Scalar>()?.as_i64(),
                Key::Choices => fields.n = map.next_value::<Scalar>()?.as_u32(),
                Key::StreamOptions | Key::GenerationConfig => {
                    map.next_value_seed(Options(TopLevel {
                        fields: &mut *fields,
                        estimator,
                    }))?;
                }
                Key::Inputs => {
                    let mut text = TextCounter::new(estimator);
                    map.next_value_seed(&mut text)?;
                    fields.tokens += text.tokens;
                    fields.inputs = Some(text.input_count());
                }
                Key::Text => {
                    let mut text = TextCounter::new(estimator);
                    map.next_value_seed(&mut text)?;
                    fields.tokens += text.tokens;
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A nested options object: read like the top level if it is an object, skipped otherwise.
struct Options<'a>(TopLevel<'a>);

impl<'de> DeserializeSeed<'de> for Options<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Options<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an options object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        ScalarVisitor.visit_seq(seq).map(drop)
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Counts the prompt tokens in any JSON value: the text of every string, one token per number
/// (token-id inputs), a fixed cost per media part, framing per message. Keys that hold no
/// prompt text (`type`, `role`, ids, media payloads) are skipped.
struct TextCounter<'a> {
    estimator: &'a dyn TokenEstimator,
    tokens: u64,
    depth: u32,
    /// For the value itself: `None` if a scalar, else the number of array elements.
    top_len: Option<u32>,
    /// Numbers seen directly inside the top-level array (a token-id input).
    top_numbers: u32,
}

impl<'a> TextCounter<'a> {
    fn new(estimator: &'a dyn TokenEstimator) -> Self {
        Self {
            estimator,
            tokens: 0,
            depth: 0,
            top_len: None,
            top_numbers: 0,
        }
    }

    fn number(&mut self) {
        self.tokens += 1;
        if self.depth == 1 {
            self.top_numbers = self.top_numbers.saturating_add(1);
        }
    }

    /// How many embedding inputs the value was: a string or one token-id array is one input,
    /// an array of strings or of token-id arrays is one per element.
    fn input_count(&self) -> u32 {
        match self.top_len {
            Some(len) if len > 0 && self.top_numbers == len => 1,
            Some(len) => len,
            None => 1,
        }
    }
}

fn skipped_key(name: &str) -> bool {
    matches!(
        name,
        "type"
            | "role"
            | "id"
            | "tool_call_id"
            | "tool_use_id"
            | "call_id"
            | "cache_control"
            | "model"
            | "mime_type"
            | "mimeType"
            | "media_type"
            | "detail"
            | "format"
            | "encoding_format"
            | "dimensions"
            | "task_type"
            | "taskType"
            | "custom_id"
            | "signature"
    )
}

fn media_key(name: &str) -> bool {
    matches!(
        name,
        "image_url"
            | "image"
            | "source"
            | "inline_data"
            | "inlineData"
            | "file_data"
            | "fileData"
            | "input_audio"
            | "file"
            | "image_data"
    )
}

enum TextKey {
    Skip,
    Media,
    Text,
}

impl<'de> de::Deserialize<'de> for TextKey {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TextKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<TextKey, E> {
                Ok(if skipped_key(v) {
                    TextKey::Skip
                } else if media_key(v) {
                    TextKey::Media
                } else {
                    TextKey::Text
                })
            }
        }
        deserializer.deserialize_identifier(V)
    }
}

impl<'de> DeserializeSeed<'de> for &mut TextCounter<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut TextCounter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("prompt content")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.tokens += u64::from(self.estimator.count(v));
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.number();
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.number();
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.number();
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let top = self.depth == 0;
        let mut len = 0_u32;
        self.depth += 1;
        while seq.next_element_seed(&mut *self)?.is_some() {
            len = len.saturating_add(1);
        }
        self.depth -= 1;
        if top {
            self.top_len = Some(len);
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth == 1 {
            // An element of `messages`, `contents` or `input`: one message's framing.
            self.tokens += u64::from(MESSAGE_OVERHEAD_TOKENS);
        }
        self.depth += 1;
        while let Some(key) = map.next_key::<TextKey>()? {
            match key {
                TextKey::Skip => {
                    map.next_value::<IgnoredAny>()?;
                }
                TextKey::Media => {
                    map.next_value::<IgnoredAny>()?;
                    self.tokens += u64::from(MEDIA_TOKENS);
                }
                TextKey::Text => map.next_value_seed(&mut *self)?,
            }
        }
        self.depth -= 1;
        Ok(())
    }
}
