//! OpenAI's Responses API request (`POST /v1/responses`): `input` as a string or a list of
//! items, optional `instructions` and `max_output_tokens`. Errors are worded as OpenAI words
//! its `invalid_request_error` messages.

use serde_json::{Map, Value, json};

use super::{Ask, model, positive};
use crate::config::Output;
use crate::text::{count_tokens, prompt};

/// OpenAI's floor on `max_output_tokens`.
const MIN_OUTPUT_TOKENS: u64 = 16;

/// The parameters a response object repeats from its request, when the request sets them.
const ECHOED: [&str; 13] = [
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
];

/// `POST /v1/responses`. The prompt is read as the equivalent chat request's: the tools, the
/// `instructions` as a system message, then the input (a string is one user message).
pub(crate) fn responses(body: &Value, output: &Output) -> Result<Ask, String> {
    let model = model(body)?;
    let mut messages = Vec::new();
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(instructions @ Value::String(_)) => {
            messages.push(json!({"role": "system", "content": instructions}));
        }
        Some(other) => {
            return Err(format!(
                "Invalid type for 'instructions': expected a string, but got {} instead.",
                kind(other)
            ));
        }
    }
    match body.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err("Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty array instead.".into());
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_object() {
                    return Err(format!(
                        "Invalid type for 'input[{i}]': expected an input item object, but got {} instead.",
                        kind(item)
                    ));
                }
                messages.push(item.clone());
            }
        }
        None | Some(Value::Null) => return Err("Missing required parameter: 'input'.".into()),
        Some(other) => {
            return Err(format!(
                "Invalid type for 'input': expected one of a string or array of input items, but got {} instead.",
                kind(other)
            ));
        }
    }
    let max_output_tokens = positive(body, "max_output_tokens")?;
    if let Some(n) = max_output_tokens.filter(|&n| n < MIN_OUTPUT_TOKENS) {
        return Err(format!(
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {MIN_OUTPUT_TOKENS}, but got {n} instead."
        ));
    }
    let messages = Value::Array(messages);
    let mut parts: Vec<&Value> = body.get("tools").into_iter().collect();
    parts.push(&messages);
    let prompt = prompt(&parts);
    let echo: Map<String, Value> = ECHOED
        .iter()
        .filter_map(|&name| {
            body.get(name)
                .filter(|value| !value.is_null())
                .map(|value| (name.to_owned(), value.clone()))
        })
        .collect();
    Ok(Ask {
        model,
        prompt_tokens: count_tokens(&prompt),
        prompt,
        max_tokens: max_output_tokens.unwrap_or(u64::from(output.default_max_tokens)),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: true,
        embeddings: None,
        echo,
    })
}

/// A JSON value's type, in OpenAI's words.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ask::chat;

    #[test]
    fn input_reads_as_the_equivalent_chat_request() {
        let output = Output::default();
        let ask = responses(
            &json!({"model": "gpt-4o-mini", "instructions": "You are terse.", "input": "Hello!",
                "max_output_tokens": 50, "stream": true, "metadata": {"k": "v"}, "store": true}),
            &output,
        )
        .unwrap();
        let same = chat(
            &json!({"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hello!"}]}),
            &output,
        )
        .unwrap();
        assert_eq!(
            (ask.prompt_tokens, ask.max_tokens, ask.stream),
            (3 + 6 + 4 + 2, 50, true)
        );
        assert_eq!(ask.prompt, same.prompt, "one cache for both APIs");
        assert_eq!(ask.echo.get("metadata"), Some(&json!({"k": "v"})));
        assert_eq!(ask.echo.get("store"), None, "nothing is stored");

        let parts = json!({"model": "m", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}]});
        let ask = responses(&parts, &output).unwrap();
        assert_eq!((ask.prompt_tokens, ask.max_tokens), (3 + 3 + 2, 4_096));
    }

    #[test]
    fn refuses_what_openai_refuses() {
        let output = Output::default();
        for (body, message) in [
            (json!({"input": "x"}), "you must provide a model parameter"),
            (
                json!({"model": "m"}),
                "Missing required parameter: 'input'.",
            ),
            (
                json!({"model": "m", "input": 3}),
                "Invalid type for 'input': expected one of a string or array of input items, but got an integer instead.",
            ),
            (
                json!({"model": "m", "input": []}),
                "Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            ),
            (
                json!({"model": "m", "input": ["x"]}),
                "Invalid type for 'input[0]': expected an input item object, but got a string instead.",
            ),
            (
                json!({"model": "m", "input": "x", "instructions": ["x"]}),
                "Invalid type for 'instructions': expected a string, but got an array instead.",
            ),
            (
                json!({"model": "m", "input": "x", "max_output_tokens": 8}),
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 8 instead.",
            ),
        ] {
            assert_eq!(responses(&body, &output).unwrap_err(), message, "{body}");
        }
    }
}
