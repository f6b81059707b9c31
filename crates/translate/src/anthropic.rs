//! Anthropic's messages (`POST /v1/messages`): requests, answers and errors, read into and
//! written from the [neutral form](crate::chat).

use serde_json::{Map, Value, json};

use crate::chat::{
    ChatRequest, ChatResponse, Finish, Image, Message, Part, Role, Tool, ToolChoice, Usage,
};
use crate::failure::{Failure, FailureKind};
use crate::report::{Malformed, Report};

/// The request fields read; any other is reported.
const READ: [&str; 11] = [
    "model",
    "system",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
];

/// Anthropic's highest temperature (OpenAI's is 2).
const MAX_TEMPERATURE: f64 = 1.0;

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

/// Reads a messages request.
///
/// # Errors
///
/// When it is not an object, or `messages` is not a list.
pub fn read_request(body: &Value, report: &mut Report) -> Result<ChatRequest, Malformed> {
    let body = body
        .as_object()
        .ok_or_else(|| Malformed::new("the request is not a JSON object"))?;
    for field in body.keys() {
        if !READ.contains(&field.as_str()) {
            report.note(field.clone(), "no counterpart in the deployment's format");
        }
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Malformed::new("messages is missing or not a list"))?;
    let mut chat = ChatRequest {
        model: text(body.get("model")),
        max_tokens: body.get("max_tokens").and_then(Value::as_u64),
        temperature: body.get("temperature").and_then(Value::as_f64),
        top_p: body.get("top_p").and_then(Value::as_f64),
        stop: body
            .get("stop_sequences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| text(Some(s)))
            .collect(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        user: text(body.get("metadata").and_then(|m| m.get("user_id"))),
        ..ChatRequest::default()
    };
    match body.get("system") {
        Some(Value::String(system)) => chat.system.push(system.clone()),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                if block.get("cache_control").is_some() {
                    report.note(
                        format!("system[{i}].cache_control"),
                        "no prompt cache marks",
                    );
                }
                chat.system
                    .push(text(block.get("text")).unwrap_or_default());
            }
        }
        _ => {}
    }
    for (i, message) in messages.iter().enumerate() {
        let role = match text(message.get("role")).as_deref() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => {
                return Err(Malformed::new(format!(
                    "messages[{i}].role is not user or assistant"
                )));
            }
        };
        let parts = match message.get("content") {
            Some(Value::String(text)) => vec![Part::Text(text.clone())],
            Some(Value::Array(blocks)) => blocks
                .iter()
                .enumerate()
                .filter_map(|(j, block)| {
                    read_block(block, &format!("messages[{i}].content[{j}]"), report)
                })
                .collect(),
            _ => Vec::new(),
        };
        chat.messages.push(Message { role, parts });
    }
    for (i, tool) in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        // Server tools (web search, code execution) name a versioned type.
        let custom = matches!(text(tool.get("type")).as_deref(), None | Some("custom"));
        match tool.get("input_schema") {
            Some(schema) if custom => chat.tools.push(Tool {
                name: text(tool.get("name")).unwrap_or_default(),
                description: text(tool.get("description")),
                parameters: schema.clone(),
            }),
            _ => report.note(format!("tools[{i}]"), "only client tools translate"),
        }
    }
    if let Some(choice) = body.get("tool_choice") {
        if choice
            .get("disable_parallel_tool_use")
            .and_then(Value::as_bool)
            == Some(true)
        {
            report.note("tool_choice.disable_parallel_tool_use", "no counterpart");
        }
        chat.tool_choice = match text(choice.get("type")).as_deref() {
            Some("auto") => Some(ToolChoice::Auto),
            Some("none") => Some(ToolChoice::None),
            Some("any") => Some(ToolChoice::Required),
            Some("tool") => Some(ToolChoice::Named(
                text(choice.get("name")).unwrap_or_default(),
            )),
            _ => {
                report.note("tool_choice", "an unknown choice");
                None
            }
        };
    }
    Ok(chat)
}

fn read_block(block: &Value, at: &str, report: &mut Report) -> Option<Part> {
    if block.get("cache_control").is_some() {
        report.note(format!("{at}.cache_control"), "no prompt cache marks");
    }
    Some(match text(block.get("type")).as_deref() {
        Some("text") => Part::Text(text(block.get("text")).unwrap_or_default()),
        Some("image") => {
            let source = block.get("source").unwrap_or(&Value::Null);
            match text(source.get("type")).as_deref() {
                Some("base64") => Part::Image(Image::Base64 {
                    media_type: text(source.get("media_type")).unwrap_or_default(),
                    data: text(source.get("data")).unwrap_or_default(),
                }),
                Some("url") => Part::Image(Image::Url(text(source.get("url")).unwrap_or_default())),
                _ => {
                    report.note(at, "only images by URL or base64 translate");
                    return None;
                }
            }
        }
        Some("tool_use") => Part::ToolCall {
            id: text(block.get("id")).unwrap_or_default(),
            name: text(block.get("name")).unwrap_or_default(),
            arguments: block.get("input").cloned().unwrap_or_else(|| json!({})),
        },
        Some("tool_result") => {
            let content = match block.get("content") {
                Some(Value::String(content)) => content.clone(),
                Some(Value::Array(blocks)) => {
                    if blocks
                        .iter()
                        .any(|b| b.get("type").and_then(Value::as_str) != Some("text"))
                    {
                        report.note(format!("{at}.content"), "only text tool results translate");
                    }
                    blocks
                        .iter()
                        .filter_map(|b| b.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
                _ => String::new(),
            };
            Part::ToolResult {
                id: text(block.get("tool_use_id")).unwrap_or_default(),
                content,
                is_error: block.get("is_error").and_then(Value::as_bool) == Some(true),
            }
        }
        _ => {
            report.note(
                at,
                "only text, images, tool calls and their results translate",
            );
            return None;
        }
    })
}

/// Writes `chat` as a messages request; `default_max_tokens` where it sets no `max_tokens`
/// (Anthropic requires one).
pub fn write_request(chat: &ChatRequest, default_max_tokens: u64, report: &mut Report) -> Value {
    let mut body = Map::new();
    if let Some(model) = &chat.model {
        body.insert("model".into(), json!(model));
    }
    body.insert(
        "max_tokens".into(),
        json!(chat.max_tokens.unwrap_or(default_max_tokens)),
    );
    if !chat.system.is_empty() {
        body.insert("system".into(), json!(chat.system.join("\n\n")));
    }
    // Turns of one role in a row become one: tool results answer the calls just before.
    let mut messages: Vec<(Role, Vec<Value>)> = Vec::new();
    for message in &chat.messages {
        let mut blocks: Vec<Value> = message.parts.iter().map(block_of).collect();
        // A user turn's tool results come first.
        blocks.sort_by_key(|b| b["type"] != "tool_result");
        match messages.last_mut() {
            Some((role, last)) if *role == message.role => last.extend(blocks),
            _ => messages.push((message.role, blocks)),
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| {
            let role = match role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": content})
        })
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    if let Some(temperature) = chat.temperature {
        if temperature > MAX_TEMPERATURE {
            report.note("temperature", "above Anthropic's most, 1: sent as 1");
        }
        body.insert(
            "temperature".into(),
            json!(temperature.min(MAX_TEMPERATURE)),
        );
    }
    if let Some(top_p) = chat.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    if !chat.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(chat.stop));
    }
    if chat.n.is_some_and(|n| n > 1) {
        report.note("n", "one answer per request");
    }
    if chat.stream {
        body.insert("stream".into(), json!(true));
    }
    if !chat.tools.is_empty() {
        let tools: Vec<Value> = chat
            .tools
            .iter()
            .map(|tool| {
                let mut out = json!({"name": tool.name, "input_schema": tool.parameters});
                if let Some(description) = &tool.description {
                    out["description"] = json!(description);
                }
                out
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &chat.tool_choice {
        let choice = match choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Named(name) => json!({"type": "tool", "name": name}),
        };
        body.insert("tool_choice".into(), choice);
    }
    if chat.response_format.is_some() {
        report.note("response_format", "no JSON mode in Anthropic's messages");
    }
    if let Some(user) = &chat.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    Value::Object(body)
}

fn block_of(part: &Part) -> Value {
    match part {
        Part::Text(text) => json!({"type": "text", "text": text}),
        Part::Image(Image::Url(url)) => {
            json!({"type": "image", "source": {"type": "url", "url": url}})
        }
        Part::Image(Image::Base64 { media_type, data }) => json!({"type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data}}),
        Part::ToolCall {
            id,
            name,
            arguments,
        } => json!({"type": "tool_use", "id": id, "name": name, "input": arguments}),
        Part::ToolResult {
            id,
            content,
            is_error,
        } => {
            let mut block = json!({"type": "tool_result", "tool_use_id": id, "content": content});
            if *is_error {
                block["is_error"] = json!(true);
            }
            block
        }
    }
}

/// Reads a message (an answer); thinking blocks are left out, and reported.
///
/// # Errors
///
/// When it has no content list.
pub fn read_response(body: &Value, report: &mut Report) -> Result<ChatResponse, Malformed> {
    let blocks = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| Malformed::new("the answer has no content"))?;
    let mut parts = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        match text(block.get("type")).as_deref() {
            Some("text") => parts.push(Part::Text(text(block.get("text")).unwrap_or_default())),
            Some("tool_use") => parts.push(Part::ToolCall {
                id: text(block.get("id")).unwrap_or_default(),
                name: text(block.get("name")).unwrap_or_default(),
                arguments: block.get("input").cloned().unwrap_or_else(|| json!({})),
            }),
            _ => report.note(
                format!("content[{i}]"),
                "only text and tool calls translate",
            ),
        }
    }
    Ok(ChatResponse {
        id: text(body.get("id")).unwrap_or_default(),
        model: text(body.get("model")).unwrap_or_default(),
        parts,
        finish: finish_of(body.get("stop_reason").and_then(Value::as_str)),
        usage: usage_of(body.get("usage")),
    })
}

/// A `stop_reason` read.
pub(crate) fn finish_of(reason: Option<&str>) -> Finish {
    match reason {
        Some("max_tokens" | "model_context_window_exceeded") => Finish::Length,
        Some("tool_use") => Finish::ToolCalls,
        Some("refusal") => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

/// A `stop_reason` written.
pub(crate) fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "refusal",
    }
}

/// A `usage` object read: its input tokens leave out the cached ones.
pub(crate) fn usage_of(usage: Option<&Value>) -> Usage {
    let count = |field: &str| {
        usage
            .and_then(|u| u.get(field))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage {
        input: count("input_tokens"),
        cached_input: count("cache_read_input_tokens"),
        cache_write: count("cache_creation_input_tokens"),
        output: count("output_tokens"),
    }
}

/// A `usage` object written.
pub(crate) fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached_input,
        "output_tokens": usage.output,
    })
}

/// Writes `answer` as a message.
pub fn write_response(answer: &ChatResponse) -> Value {
    let content: Vec<Value> = answer.parts.iter().map(block_of).collect();
    json!({
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": stop_reason(answer.finish),
        "stop_sequence": null,
        "usage": usage_json(&answer.usage),
    })
}

/// Reads an error answer of `status`.
pub fn read_error(status: u16, body: &[u8]) -> Failure {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = body.get("error").unwrap_or(&Value::Null);
    let message = text(error.get("message")).unwrap_or_else(|| format!("status {status}"));
    let lower = message.to_lowercase();
    let kind = match text(error.get("type")).as_deref() {
        Some("invalid_request_error") if lower.contains("prompt is too long") => {
            FailureKind::ContextLength
        }
        Some("invalid_request_error") if lower.contains("credit balance") => {
            FailureKind::QuotaExhausted
        }
        Some("invalid_request_error") => FailureKind::InvalidRequest,
        Some("authentication_error") => FailureKind::Authentication,
        Some("permission_error") => FailureKind::Permission,
        Some("not_found_error") => FailureKind::NotFound,
        Some("request_too_large") => FailureKind::TooLarge,
        Some("rate_limit_error") => FailureKind::RateLimited,
        Some("overloaded_error") => FailureKind::Overloaded,
        Some("api_error") => FailureKind::Server,
        _ => FailureKind::from_status(status),
    };
    Failure { kind, message }
}

/// Writes `failure` as Anthropic would answer it: its status and body.
pub fn write_error(failure: &Failure) -> (u16, Value) {
    let (status, kind) = match failure.kind {
        FailureKind::InvalidRequest | FailureKind::ContextLength => (400, "invalid_request_error"),
        // Anthropic answers a spent credit balance as a bad request.
        FailureKind::QuotaExhausted => (400, "invalid_request_error"),
        FailureKind::Authentication => (401, "authentication_error"),
        FailureKind::Permission => (403, "permission_error"),
        FailureKind::NotFound => (404, "not_found_error"),
        FailureKind::TooLarge => (413, "request_too_large"),
        FailureKind::RateLimited => (429, "rate_limit_error"),
        FailureKind::Server => (500, "api_error"),
        FailureKind::Overloaded => (529, "overloaded_error"),
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": failure.message}});
    (status, body)
}
