//! What a request asks of the simulated model, read from its JSON body.

mod gemini;
mod responses;

use serde_json::{Map, Value};

use crate::config::Output;
use crate::route::{Call, Operation};
use crate::text::{count_tokens, prompt};

pub(crate) use self::gemini::{batch_embed, embed, generate};
pub(crate) use self::responses::responses;

/// A parsed request to a generation or embeddings endpoint.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ask {
    pub(crate) model: String,
    /// The prompt as the model reads it ([`text::prompt`](crate::text::prompt)); empty for
    /// embeddings, which are never cached.
    pub(crate) prompt: String,
    pub(crate) prompt_tokens: u64,
    /// The output cap: the request's `max_tokens`, or the configured default.
    pub(crate) max_tokens: u64,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) embeddings: Option<Embeddings>,
    /// Request parameters the answer repeats (the Responses API echoes its own).
    pub(crate) echo: Map<String, Value>,
}

/// Reads what `call` asks from its JSON body. The model the URL names (an Azure deployment, a
/// Gemini model) wins over the body's.
pub(crate) fn parse(call: &Call, mut json: Value, output: &Output) -> Result<Ask, String> {
    let model = call.model.as_deref().unwrap_or_default();
    if let (Some(model), Some(body)) = (&call.model, json.as_object_mut())
        && matches!(call.operation, Operation::Chat | Operation::Embeddings)
    {
        body.insert("model".to_owned(), Value::String(model.clone()));
    }
    match call.operation {
        Operation::Chat => chat(&json, output),
        Operation::Embeddings => embeddings(&json, output),
        Operation::Responses => responses(&json, output),
        Operation::Messages => messages(&json),
        Operation::GenerateContent => generate(&json, model, output, false),
        Operation::StreamGenerateContent { .. } => generate(&json, model, output, true),
        Operation::EmbedContent => embed(&json, model, output),
        Operation::BatchEmbedContents => batch_embed(&json, model, output),
    }
}

/// The inputs of an embeddings request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Embeddings {
    pub(crate) inputs: Vec<String>,
    pub(crate) dimensions: u32,
    pub(crate) base64: bool,
    /// Per-input vector sizes, when each input sets its own (Gemini's batch); empty: every
    /// vector has `dimensions`.
    pub(crate) sizes: Vec<u32>,
}

impl Embeddings {
    /// The vector size of input `i`.
    pub(crate) fn size(&self, i: usize) -> u32 {
        self.sizes.get(i).copied().unwrap_or(self.dimensions)
    }
}

/// OpenAI's limits on one embeddings request.
const MAX_EMBEDDING_INPUTS: usize = 2_048;
const MAX_TOKENS_PER_INPUT: u64 = 8_192;
const MAX_TOKENS_PER_EMBEDDING_REQUEST: u64 = 300_000;

fn model(body: &Value) -> Result<String, String> {
    match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => Ok(model.clone()),
        Some(_) => Err("'model' must be a non-empty string".into()),
        None => Err("you must provide a model parameter".into()),
    }
}

fn positive(body: &Value, field: &str) -> Result<Option<u64>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|&v| v > 0)
            .map(Some)
            .ok_or_else(|| format!("'{field}' must be a positive integer, got {value}")),
    }
}

/// `POST /v1/chat/completions`.
pub(crate) fn chat(body: &Value, output: &Output) -> Result<Ask, String> {
    let model = model(body)?;
    let messages = match body.get("messages") {
        Some(messages @ Value::Array(items)) if !items.is_empty() => messages,
        _ => return Err("'messages' must be a non-empty array".into()),
    };
    let max_tokens = positive(body, "max_completion_tokens")?.or(positive(body, "max_tokens")?);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = stream
        && body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let mut parts: Vec<&Value> = body.get("tools").into_iter().collect();
    parts.push(messages);
    let prompt = prompt(&parts);
    Ok(Ask {
        model,
        prompt_tokens: count_tokens(&prompt),
        prompt,
        max_tokens: max_tokens.unwrap_or(u64::from(output.default_max_tokens)),
        stream,
        include_usage,
        embeddings: None,
        echo: Map::new(),
    })
}

/// `POST /v1/messages`: `max_tokens` is required, as Anthropic requires it.
pub(crate) fn messages(body: &Value) -> Result<Ask, String> {
    let model = model(body)?;
    let messages = match body.get("messages") {
        Some(messages @ Value::Array(items)) if !items.is_empty() => messages,
        _ => return Err("messages: field required".into()),
    };
    let max_tokens = positive(body, "max_tokens")?.ok_or("max_tokens: field required")?;
    let mut parts: Vec<&Value> = body.get("tools").into_iter().collect();
    parts.extend(body.get("system"));
    parts.push(messages);
    let prompt = prompt(&parts);
    Ok(Ask {
        model,
        prompt_tokens: count_tokens(&prompt),
        prompt,
        max_tokens,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: true,
        embeddings: None,
        echo: Map::new(),
    })
}

/// `POST /v1/embeddings`: a string, an array of strings, of token ids, or of token-id arrays.
pub(crate) fn embeddings(body: &Value, output: &Output) -> Result<Ask, String> {
    let model = model(body)?;
    let as_tokens = |ids: &[Value]| -> Result<String, String> {
        if ids.iter().all(Value::is_u64) {
            Ok(ids.iter().map(|id| format!("t{id} ")).collect())
        } else {
            Err("'$.input' is invalid: token ids must be non-negative integers".into())
        }
    };
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => vec![as_tokens(items)?],
        Some(Value::Array(items)) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|item| as_tokens(item.as_array().map_or(&[][..], Vec::as_slice)))
            .collect::<Result<_, _>>()?,
        _ => return Err("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.".into()),
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(format!(
            "'$.input' must hold between 1 and {MAX_EMBEDDING_INPUTS} inputs, got {}",
            inputs.len()
        ));
    }
    let mut total = 0;
    for input in &inputs {
        let tokens = count_tokens(input).max(1);
        if tokens > MAX_TOKENS_PER_INPUT {
            return Err(format!(
                "This model's maximum context length is {MAX_TOKENS_PER_INPUT} tokens, however you requested {tokens} tokens in the input. Please reduce your input."
            ));
        }
        total += tokens;
    }
    if total > MAX_TOKENS_PER_EMBEDDING_REQUEST {
        return Err(format!(
            "Requested {total} tokens, max {MAX_TOKENS_PER_EMBEDDING_REQUEST} tokens per request"
        ));
    }
    let dimensions = match positive(body, "dimensions")? {
        Some(d) => u32::try_from(d)
            .ok()
            .filter(|&d| d <= 8_192)
            .ok_or("'dimensions' is too large")?,
        None => output.embedding_dimensions,
    };
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(other) => {
            return Err(format!(
                "'encoding_format' must be 'float' or 'base64', got {other}"
            ));
        }
    };
    Ok(Ask {
        model,
        prompt: String::new(),
        prompt_tokens: total,
        max_tokens: 0,
        stream: false,
        include_usage: false,
        embeddings: Some(Embeddings {
            inputs,
            dimensions,
            base64,
            sizes: Vec::new(),
        }),
        echo: Map::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_reads_caps_streams_and_usage_options() {
        let output = Output::default();
        let ask = chat(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}],
                "max_completion_tokens": 50, "stream": true, "stream_options": {"include_usage": true}}),
            &output,
        )
        .unwrap();
        assert_eq!(
            (
                ask.prompt_tokens,
                ask.max_tokens,
                ask.stream,
                ask.include_usage
            ),
            (3 + 3 + 2, 50, true, true)
        );
        let ask = chat(
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            &output,
        )
        .unwrap();
        assert_eq!(ask.max_tokens, 4_096);
        assert!(chat(&json!({"model": "m", "messages": []}), &output).is_err());
        assert!(
            chat(
                &json!({"messages": [{"role": "user", "content": "x"}]}),
                &output
            )
            .is_err()
        );
        assert!(
            chat(
                &json!({"model": "m", "messages": [{}], "max_tokens": -1}),
                &output
            )
            .is_err()
        );
    }

    #[test]
    fn messages_require_max_tokens() {
        let err =
            messages(&json!({"model": "claude", "messages": [{"role": "user", "content": "x"}]}))
                .unwrap_err();
        assert_eq!(err, "max_tokens: field required");
    }

    #[test]
    fn embeddings_take_every_input_shape_within_openai_limits() {
        let output = Output::default();
        let shapes = [
            json!("one"),
            json!(["a", "b"]),
            json!([1, 2, 3]),
            json!([[1], [2, 3]]),
        ];
        let counts = [1, 2, 1, 2];
        for (input, count) in shapes.into_iter().zip(counts) {
            let ask = embeddings(&json!({"model": "e", "input": input}), &output).unwrap();
            assert_eq!(ask.embeddings.unwrap().inputs.len(), count);
        }
        let too_many = vec!["x"; 2_049];
        assert!(embeddings(&json!({"model": "e", "input": too_many}), &output).is_err());
        assert!(embeddings(&json!({"model": "e", "input": []}), &output).is_err());
        assert!(
            embeddings(
                &json!({"model": "e", "input": "x", "encoding_format": "hex"}),
                &output
            )
            .is_err()
        );
    }
}
