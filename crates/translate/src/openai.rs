//! OpenAI's chat completions (`POST /v1/chat/completions`): requests, answers and errors, read
//! into and written from the [neutral form](crate::chat).

use serde_json::{Map, Value, json};

use crate::chat::{
    ChatRequest, ChatResponse, Finish, Image, Message, Part, ResponseFormat, Role, Tool,
    ToolChoice, Usage,
};
use crate::failure::{Failure, FailureKind};
use crate::report::{Malformed, Report};

/// The request fields read; any other is reported.
const READ: [&str; 14] = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "n",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "response_format",
    "user",
];

/// Reads a chat completions request.
///
/// # Errors
///
/// When it is not an object, or `messages` is not a list.
pub fn read_request(body: &Value, report: &mut Report) -> Result<ChatRequest, Malformed> {
    let body = body
        .as_object()
        .ok_or_else(|| Malformed::new("the request is not a JSON object"))?;
    for field in body.keys() {
        // `parallel_tool_calls: true` is every format's default.
        let default = field == "parallel_tool_calls" && body[field] == Value::Bool(true);
        if !READ.contains(&field.as_str()) && !default {
            report.note(field.clone(), "no counterpart in the deployment's format");
        }
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Malformed::new("messages is missing or not a list"))?;
    let mut chat = ChatRequest {
        model: text(body.get("model")),
        max_tokens: body
            .get("max_completion_tokens")
            .or_else(|| body.get("max_tokens"))
            .and_then(Value::as_u64),
        temperature: body.get("temperature").and_then(Value::as_f64),
        top_p: body.get("top_p").and_then(Value::as_f64),
        stop: match body.get("stop") {
            Some(Value::String(stop)) => vec![stop.clone()],
            Some(Value::Array(stops)) => stops.iter().filter_map(|s| text(Some(s))).collect(),
            _ => Vec::new(),
        },
        n: body.get("n").and_then(Value::as_u64),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        user: text(body.get("user")),
        ..ChatRequest::default()
    };
    for (i, message) in messages.iter().enumerate() {
        read_message(&mut chat, message, i, report)?;
    }
    for (i, tool) in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let function = tool.get("function");
        match (text(tool.get("type")).as_deref(), function) {
            (Some("function"), Some(function)) => chat.tools.push(Tool {
                name: text(function.get("name")).unwrap_or_default(),
                description: text(function.get("description")),
                parameters: function
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            }),
            _ => report.note(format!("tools[{i}]"), "only function tools translate"),
        }
    }
    chat.tool_choice = match body.get("tool_choice") {
        None => None,
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            _ => {
                report.note("tool_choice", "an unknown choice");
                None
            }
        },
        Some(choice) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(ToolChoice::Named(name.to_owned())),
            None => {
                report.note("tool_choice", "only a function by name translates");
                None
            }
        },
    };
    chat.response_format = match body.get("response_format") {
        None => None,
        Some(format) => match text(format.get("type")).as_deref() {
            Some("text") => None,
            Some("json_object") => Some(ResponseFormat::Json),
            Some("json_schema") => {
                let schema = format.get("json_schema").unwrap_or(&Value::Null);
                Some(ResponseFormat::Schema {
                    name: text(schema.get("name")).unwrap_or_default(),
                    schema: schema.get("schema").cloned().unwrap_or(Value::Null),
                    strict: schema.get("strict").and_then(Value::as_bool) == Some(true),
                })
            }
            _ => {
                report.note("response_format", "an unknown format");
                None
            }
        },
    };
    Ok(chat)
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

/// A message's content as text: a string, or its text parts joined.
fn joined(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn read_message(
    chat: &mut ChatRequest,
    message: &Value,
    i: usize,
    report: &mut Report,
) -> Result<(), Malformed> {
    let role = text(message.get("role"))
        .ok_or_else(|| Malformed::new(format!("messages[{i}].role is missing")))?;
    let content = message.get("content");
    match role.as_str() {
        "system" | "developer" => {
            if !chat.messages.is_empty() {
                report.note(
                    format!("messages[{i}]"),
                    "a system message between turns goes to the system prompt",
                );
            }
            chat.system.push(joined(content));
        }
        "user" => {
            let parts = read_parts(content, i, report);
            chat.messages.push(Message {
                role: Role::User,
                parts,
            });
        }
        "assistant" => {
            let mut parts = read_parts(content, i, report);
            for (j, call) in message
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let arguments = call
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}");
                let arguments = serde_json::from_str(arguments).unwrap_or_else(|_| {
                    report.note(
                        format!("messages[{i}].tool_calls[{j}].function.arguments"),
                        "not a JSON object",
                    );
                    json!({})
                });
                parts.push(Part::ToolCall {
                    id: text(call.get("id")).unwrap_or_default(),
                    name: text(call.pointer("/function/name")).unwrap_or_default(),
                    arguments,
                });
            }
            chat.messages.push(Message {
                role: Role::Assistant,
                parts,
            });
        }
        "tool" => chat.messages.push(Message {
            role: Role::User,
            parts: vec![Part::ToolResult {
                id: text(message.get("tool_call_id")).unwrap_or_default(),
                content: joined(content),
                is_error: false,
            }],
        }),
        _ => report.note(format!("messages[{i}]"), "a role with no counterpart"),
    }
    Ok(())
}

fn read_parts(content: Option<&Value>, i: usize, report: &mut Report) -> Vec<Part> {
    match content {
        Some(Value::String(text)) => vec![Part::Text(text.clone())],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, part)| match text(part.get("type")).as_deref() {
                Some("text") => Some(Part::Text(text(part.get("text")).unwrap_or_default())),
                Some("image_url") => {
                    let url = text(part.pointer("/image_url/url")).unwrap_or_default();
                    Some(Part::Image(image_of_url(url)))
                }
                _ => {
                    report.note(
                        format!("messages[{i}].content[{j}]"),
                        "only text and images translate",
                    );
                    None
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// An image URL, or the inline image a `data:` URL holds.
fn image_of_url(url: String) -> Image {
    let inline = url.strip_prefix("data:").and_then(|rest| {
        let (media_type, data) = rest.split_once(";base64,")?;
        Some(Image::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        })
    });
    inline.unwrap_or(Image::Url(url))
}

/// Writes `chat` as a chat completions request (every field of the neutral form has a place
/// in it).
pub fn write_request(chat: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    if !chat.system.is_empty() {
        messages.push(json!({"role": "system", "content": chat.system.join("\n\n")}));
    }
    for message in &chat.messages {
        match message.role {
            Role::User => write_user(&mut messages, &message.parts),
            Role::Assistant => messages.push(write_assistant(&message.parts)),
        }
    }
    let mut body = Map::new();
    if let Some(model) = &chat.model {
        body.insert("model".into(), json!(model));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(max_tokens) = chat.max_tokens {
        body.insert("max_tokens".into(), json!(max_tokens));
    }
    if let Some(temperature) = chat.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = chat.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    if !chat.stop.is_empty() {
        body.insert("stop".into(), json!(chat.stop));
    }
    if let Some(n) = chat.n {
        body.insert("n".into(), json!(n));
    }
    if chat.stream {
        body.insert("stream".into(), json!(true));
        // The usage comes in a last chunk only when asked for.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if !chat.tools.is_empty() {
        let tools: Vec<Value> = chat
            .tools
            .iter()
            .map(|tool| {
                let mut function = json!({"name": tool.name, "parameters": tool.parameters});
                if let Some(description) = &tool.description {
                    function["description"] = json!(description);
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &chat.tool_choice {
        let choice = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), choice);
    }
    if let Some(format) = &chat.response_format {
        let format = match format {
            ResponseFormat::Json => json!({"type": "json_object"}),
            ResponseFormat::Schema {
                name,
                schema,
                strict,
            } => json!({"type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": strict}}),
        };
        body.insert("response_format".into(), format);
    }
    if let Some(user) = &chat.user {
        body.insert("user".into(), json!(user));
    }
    Value::Object(body)
}

fn image_url(image: &Image) -> String {
    match image {
        Image::Url(url) => url.clone(),
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
    }
}

/// A user turn: its tool results first, each a `tool` message (they answer the assistant's
/// calls just before), then its text and images as one user message.
fn write_user(messages: &mut Vec<Value>, parts: &[Part]) {
    let mut content = Vec::new();
    for part in parts {
        match part {
            Part::ToolResult { id, content, .. } => {
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            Part::Text(text) => content.push(json!({"type": "text", "text": text})),
            Part::Image(image) => content.push(json!({"type": "image_url",
                "image_url": {"url": image_url(image)}})),
            Part::ToolCall { .. } => {}
        }
    }
    match content.as_slice() {
        [] => {}
        [only] if only["type"] == "text" => {
            messages.push(json!({"role": "user", "content": only["text"]}));
        }
        _ => messages.push(json!({"role": "user", "content": content})),
    }
}

fn write_assistant(parts: &[Part]) -> Value {
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let calls: Vec<Value> = parts.iter().filter_map(tool_call).collect();
    let mut message = json!({
        "role": "assistant",
        "content": if texts.is_empty() { Value::Null } else { json!(texts.join("")) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    message
}

fn tool_call(part: &Part) -> Option<Value> {
    match part {
        Part::ToolCall {
            id,
            name,
            arguments,
        } => Some(json!({"id": id, "type": "function",
            "function": {"name": name, "arguments": arguments.to_string()}})),
        _ => None,
    }
}

/// Reads a chat completion (its first choice).
///
/// # Errors
///
/// When it has no choice.
pub fn read_response(body: &Value) -> Result<ChatResponse, Malformed> {
    let choice = body
        .pointer("/choices/0")
        .ok_or_else(|| Malformed::new("the answer has no choice"))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut parts = Vec::new();
    let content = joined(message.get("content"));
    if !content.is_empty() {
        parts.push(Part::Text(content));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_else(|| json!({}));
        parts.push(Part::ToolCall {
            id: text(call.get("id")).unwrap_or_default(),
            name: text(call.pointer("/function/name")).unwrap_or_default(),
            arguments,
        });
    }
    Ok(ChatResponse {
        id: text(body.get("id")).unwrap_or_default(),
        model: text(body.get("model")).unwrap_or_default(),
        parts,
        finish: finish_of(choice.get("finish_reason").and_then(Value::as_str)),
        usage: usage_of(body.get("usage")),
    })
}

/// A `finish_reason` read.
pub(crate) fn finish_of(reason: Option<&str>) -> Finish {
    match reason {
        Some("length") => Finish::Length,
        Some("tool_calls" | "function_call") => Finish::ToolCalls,
        Some("content_filter") => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

/// A `finish_reason` written.
pub(crate) fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::ContentFilter => "content_filter",
    }
}

/// A `usage` object read: its prompt tokens include the cached ones.
pub(crate) fn usage_of(usage: Option<&Value>) -> Usage {
    let count = |pointer: &str| {
        usage
            .and_then(|u| u.pointer(pointer))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = count("/prompt_tokens_details/cached_tokens");
    Usage {
        input: count("/prompt_tokens").saturating_sub(cached),
        cached_input: cached,
        cache_write: 0,
        output: count("/completion_tokens"),
    }
}

/// A `usage` object written.
pub(crate) fn usage_json(usage: &Usage) -> Value {
    let prompt = usage.all_input();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input},
    })
}

/// Writes `answer` as a chat completion created at `created` (Unix seconds).
pub fn write_response(answer: &ChatResponse, created: u64) -> Value {
    let message = write_assistant(&answer.parts);
    json!({
        "id": answer.id,
        "object": "chat.completion",
        "created": created,
        "model": answer.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(answer.finish),
        }],
        "usage": usage_json(&answer.usage),
    })
}

/// Reads an error answer of `status`.
pub fn read_error(status: u16, body: &[u8]) -> Failure {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = body.get("error").unwrap_or(&Value::Null);
    let message = text(error.get("message")).unwrap_or_else(|| format!("status {status}"));
    let code = text(error.get("code")).unwrap_or_default();
    let kind = text(error.get("type")).unwrap_or_default();
    let kind = if code == "context_length_exceeded" {
        FailureKind::ContextLength
    } else if code == "insufficient_quota" || kind == "insufficient_quota" {
        FailureKind::QuotaExhausted
    } else if code == "rate_limit_exceeded" || matches!(kind.as_str(), "requests" | "tokens") {
        // Also where no status says so: an error inside a stream.
        FailureKind::RateLimited
    } else if status >= 500 && message.to_lowercase().contains("overloaded") {
        FailureKind::Overloaded
    } else {
        FailureKind::from_status(status)
    };
    Failure { kind, message }
}

/// Writes `failure` as OpenAI would answer it: its status and body.
pub fn write_error(failure: &Failure) -> (u16, Value) {
    let (status, kind, code) = match failure.kind {
        FailureKind::InvalidRequest => (400, "invalid_request_error", Value::Null),
        FailureKind::ContextLength => (
            400,
            "invalid_request_error",
            json!("context_length_exceeded"),
        ),
        FailureKind::Authentication => (401, "invalid_request_error", json!("invalid_api_key")),
        FailureKind::Permission => (403, "invalid_request_error", Value::Null),
        FailureKind::NotFound => (404, "invalid_request_error", json!("model_not_found")),
        FailureKind::TooLarge => (413, "invalid_request_error", Value::Null),
        FailureKind::RateLimited => (429, "requests", json!("rate_limit_exceeded")),
        FailureKind::QuotaExhausted => (429, "insufficient_quota", json!("insufficient_quota")),
        FailureKind::Overloaded => (503, "server_error", Value::Null),
        FailureKind::Server => (500, "server_error", Value::Null),
    };
    let body = json!({"error": {"message": failure.message, "type": kind, "param": null,
        "code": code}});
    (status, body)
}
