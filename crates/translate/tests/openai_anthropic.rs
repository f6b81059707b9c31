//! OpenAI's chat completions and Anthropic's messages, translated both ways: every mapping,
//! field by field, what is reported instead of lost, answers and every class of error.

use serde_json::{Value, json};
use tollgate_translate::{Format, Options, error, request, response};

const OPENAI: Format = Format::OpenAiChat;
const ANTHROPIC: Format = Format::AnthropicMessages;

fn translate(from: Format, to: Format, body: Value) -> (Value, Vec<String>) {
    let (out, report) =
        request(from, to, body.to_string().as_bytes(), &Options::default()).expect("reads");
    let fields = report
        .untranslatable
        .iter()
        .map(|u| u.field.clone())
        .collect();
    (serde_json::from_slice(&out).unwrap(), fields)
}

fn answer(from: Format, to: Format, body: Value) -> Value {
    let (out, _) = response(from, to, body.to_string().as_bytes(), 1_700_000_000).unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn an_openai_conversation_with_tools_becomes_anthropic_messages() {
    let (sent, dropped) = translate(
        OPENAI,
        ANTHROPIC,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "user-42",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "time", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "4°C, cloudy"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "09:12"}]},
                {"role": "user", "content": "Thanks."}
            ],
            "tools": [{"type": "function", "function": {"name": "weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}}
        }),
    );
    assert!(dropped.is_empty(), "{dropped:?}");
    assert_eq!(
        sent,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 300,
            "system": "You are terse.\n\nUse tools.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.png"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                        "data": "iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}},
                    {"type": "tool_use", "id": "call_2", "name": "time", "input": {}}
                ]},
                // The two tool messages and the next user turn are one user turn, results first.
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "4°C, cloudy"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "09:12"},
                    {"type": "text", "text": "Thanks."}
                ]}
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "stream": true,
            "tools": [{"name": "weather", "description": "Weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "weather"},
            "metadata": {"user_id": "user-42"}
        })
    );
}

#[test]
fn what_anthropic_lacks_is_reported_never_silently_lost() {
    let (sent, dropped) = translate(
        OPENAI,
        ANTHROPIC,
        json!({
            "model": "m", "n": 2, "logprobs": true, "seed": 7, "frequency_penalty": 0.5,
            "temperature": 1.6,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
                {"role": "system", "content": "late"}
            ]
        }),
    );
    assert_eq!(
        dropped,
        [
            "frequency_penalty",
            "logprobs",
            "seed",
            "messages[0].content[0]",
            "messages[1]",
            "temperature",
            "n",
            "response_format"
        ]
    );
    assert_eq!(sent["temperature"], 1.0, "clamped to Anthropic's most");
    assert_eq!(sent["max_tokens"], 4096, "Anthropic requires one");
    assert_eq!(sent["system"], "late");
    assert!(sent.get("n").is_none() && sent.get("logprobs").is_none());
}

#[test]
fn tool_choices_map_both_ways() {
    let cases = [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"type": "tool", "name": "f"}),
        ),
    ];
    for (openai, anthropic) in cases {
        let messages = json!([{"role": "user", "content": "x"}]);
        let (sent, _) = translate(
            OPENAI,
            ANTHROPIC,
            json!({"messages": messages, "tool_choice": openai}),
        );
        assert_eq!(sent["tool_choice"], anthropic);
        let (back, _) = translate(
            ANTHROPIC,
            OPENAI,
            json!({"messages": messages, "tool_choice": anthropic, "max_tokens": 5}),
        );
        assert_eq!(back["tool_choice"], openai);
    }
}

#[test]
fn an_anthropic_conversation_with_tools_becomes_openai_chat() {
    let (sent, dropped) = translate(
        ANTHROPIC,
        OPENAI,
        json!({
            "model": "gpt-4o-mini",
            "max_tokens": 200,
            "system": [{"type": "text", "text": "Be exact.", "cache_control": {"type": "ephemeral"}}],
            "top_k": 40,
            "stop_sequences": ["###"],
            "stream": true,
            "metadata": {"user_id": "u-7"},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look it up."},
                    {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "cat"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a cat"}],
                     "is_error": false},
                    {"type": "text", "text": "And?"}
                ]}
            ],
            "tools": [{"name": "search", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"}
        }),
    );
    assert_eq!(dropped, ["top_k", "system[0].cache_control"]);
    assert_eq!(
        sent,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be exact."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
                ]},
                {"role": "assistant", "content": "Let me look it up.", "tool_calls": [
                    {"id": "toolu_1", "type": "function",
                     "function": {"name": "search", "arguments": "{\"q\":\"cat\"}"}}
                ]},
                // The result answers the call: before the user's text.
                {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"},
                {"role": "user", "content": "And?"}
            ],
            "max_tokens": 200,
            "stop": ["###"],
            "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "user": "u-7"
        })
    );
}

#[test]
fn a_request_that_is_not_a_chat_is_malformed() {
    for body in [&b"not json"[..], br#"[1]"#, br#"{"model": "m"}"#] {
        let error = request(OPENAI, ANTHROPIC, body, &Options::default()).unwrap_err();
        assert!(!error.to_string().is_empty());
    }
    let error = request(
        ANTHROPIC,
        OPENAI,
        br#"{"messages": [{"role": "tool", "content": "x"}]}"#,
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "messages[0].role is not user or assistant"
    );
}

#[test]
fn an_anthropic_answer_reaches_an_openai_client() {
    let back = answer(
        ANTHROPIC,
        OPENAI,
        json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "...", "signature": "x"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Oslo"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 5, "output_tokens": 12}
        }),
    );
    assert_eq!(
        back,
        json!({
            "id": "msg_01", "object": "chat.completion", "created": 1_700_000_000u64,
            "model": "claude-sonnet-4-5",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_9", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
            "usage": {"prompt_tokens": 125, "completion_tokens": 12, "total_tokens": 137,
                "prompt_tokens_details": {"cached_tokens": 100}}
        })
    );
}

#[test]
fn an_openai_answer_reaches_an_anthropic_client() {
    let back = answer(
        OPENAI,
        ANTHROPIC,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "length",
                "message": {"role": "assistant", "content": "Once upon"}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32,
                "prompt_tokens_details": {"cached_tokens": 10}}
        }),
    );
    assert_eq!(
        back,
        json!({
            "id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
            "content": [{"type": "text", "text": "Once upon"}],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 10, "output_tokens": 2}
        })
    );
}

#[test]
fn every_reason_to_stop_maps_both_ways() {
    let cases = [
        ("end_turn", "stop", "end_turn"),
        ("stop_sequence", "stop", "end_turn"),
        ("max_tokens", "length", "max_tokens"),
        ("tool_use", "tool_calls", "tool_use"),
        ("refusal", "content_filter", "refusal"),
        ("pause_turn", "stop", "end_turn"),
    ];
    for (anthropic, openai, again) in cases {
        let message = json!({"id": "m", "model": "c", "content": [], "stop_reason": anthropic,
            "usage": {"input_tokens": 1, "output_tokens": 1}});
        let back = answer(ANTHROPIC, OPENAI, message);
        assert_eq!(back["choices"][0]["finish_reason"], openai, "{anthropic}");
        let there = answer(OPENAI, ANTHROPIC, back);
        assert_eq!(there["stop_reason"], again, "{anthropic}");
    }
}

/// An error answer translated: its status, and the body's type (and code, for OpenAI).
fn failed(from: Format, to: Format, status: u16, body: Value) -> (u16, Value) {
    let (status, body) = error(from, to, status, body.to_string().as_bytes());
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn every_anthropic_error_reaches_an_openai_client_as_its_sdk_expects() {
    // The OpenAI SDK raises by status: 400 BadRequestError, 401 AuthenticationError,
    // 403 PermissionDeniedError, 404 NotFoundError, 429 RateLimitError, 5xx InternalServerError.
    let cases = [
        (
            400,
            "invalid_request_error",
            "max_tokens: must be positive",
            400,
            Value::Null,
        ),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            400,
            json!("context_length_exceeded"),
        ),
        (
            400,
            "invalid_request_error",
            "Your credit balance is too low",
            429,
            json!("insufficient_quota"),
        ),
        (
            401,
            "authentication_error",
            "invalid x-api-key",
            401,
            json!("invalid_api_key"),
        ),
        (403, "permission_error", "no access", 403, Value::Null),
        (
            404,
            "not_found_error",
            "model: nope",
            404,
            json!("model_not_found"),
        ),
        (413, "request_too_large", "too large", 413, Value::Null),
        (
            429,
            "rate_limit_error",
            "slow down",
            429,
            json!("rate_limit_exceeded"),
        ),
        (500, "api_error", "internal", 500, Value::Null),
        (529, "overloaded_error", "Overloaded", 503, Value::Null),
    ];
    for (status, kind, message, want, code) in cases {
        let body = json!({"type": "error", "error": {"type": kind, "message": message}});
        let (got, body) = failed(ANTHROPIC, OPENAI, status, body);
        assert_eq!(
            (got, &body["error"]["code"]),
            (want, &code),
            "{kind}: {message}"
        );
        assert_eq!(body["error"]["message"], message);
    }
}

#[test]
fn every_openai_error_reaches_an_anthropic_client_as_its_sdk_expects() {
    let cases = [
        (
            400,
            "invalid_request_error",
            None,
            "bad",
            400,
            "invalid_request_error",
        ),
        (
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            "too long",
            400,
            "invalid_request_error",
        ),
        (
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "bad key",
            401,
            "authentication_error",
        ),
        (
            403,
            "invalid_request_error",
            None,
            "region",
            403,
            "permission_error",
        ),
        (
            404,
            "invalid_request_error",
            Some("model_not_found"),
            "no model",
            404,
            "not_found_error",
        ),
        (
            429,
            "requests",
            Some("rate_limit_exceeded"),
            "slow down",
            429,
            "rate_limit_error",
        ),
        (
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
            "quota",
            400,
            "invalid_request_error",
        ),
        (500, "server_error", None, "oops", 500, "api_error"),
        (
            503,
            "server_error",
            None,
            "The engine is currently overloaded",
            529,
            "overloaded_error",
        ),
        (502, "server_error", None, "bad gateway", 500, "api_error"),
    ];
    for (status, kind, code, message, want, want_kind) in cases {
        let body = json!({"error": {"message": message, "type": kind, "code": code}});
        let (got, body) = failed(OPENAI, ANTHROPIC, status, body);
        assert_eq!(
            (got, body["error"]["type"].as_str()),
            (want, Some(want_kind)),
            "{message}"
        );
        assert_eq!(body["type"], "error");
    }
    // A body that is not JSON still says its status's kind.
    let (status, body) = error(OPENAI, ANTHROPIC, 429, b"<html>Too Many Requests</html>");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, &body["error"]["type"]),
        (429, &json!("rate_limit_error"))
    );
}

#[test]
fn a_translatable_openai_request_comes_back_the_same_through_anthropic() {
    let original = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "r"},
            {"role": "user", "content": "more"}
        ],
        "max_tokens": 10,
        "temperature": 0.5,
        "stop": ["x", "y"]
    });
    let (there, dropped) = translate(OPENAI, ANTHROPIC, original.clone());
    assert!(dropped.is_empty());
    let (back, dropped) = translate(ANTHROPIC, OPENAI, there);
    assert!(dropped.is_empty());
    assert_eq!(back, original);
}
