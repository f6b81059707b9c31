//! OpenAI's Responses API (`POST /v1/responses`): the `response` object and its SSE event
//! sequence, with every field the official SDKs require. Errors and rate-limit headers are the
//! OpenAI dialect's, as for chat completions.
//!
//! A stream runs `response.created`, `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, one `response.output_text.delta` per token,
//! `response.output_text.done`, `response.content_part.done`, `response.output_item.done`,
//! and `response.completed` — or `response.incomplete` when `max_output_tokens` cut the
//! answer, as OpenAI ends such a stream. Each event is `event: <type>` and a `data:` object
//! carrying the same `type` and a `sequence_number` counted from 0. A stream that breaks with
//! an error ends with an `error` event and `response.failed`.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::answer::{Answer, Break};
use crate::body::Ending;

const SERVER_ERROR: &str =
    "The server had an error while processing your request. Sorry about that!";

fn response_id(answer: &Answer) -> String {
    format!("resp_sim{:016}", answer.seq)
}

fn message_id(answer: &Answer) -> String {
    format!("msg_sim{:016}", answer.seq)
}

/// `completed`, or `incomplete` when the output cap cut the answer.
fn status(answer: &Answer) -> &'static str {
    if answer.truncated {
        "incomplete"
    } else {
        "completed"
    }
}

fn usage(answer: &Answer, output_tokens: usize) -> Value {
    json!({
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": answer.cached.read,
            "cache_write_tokens": answer.cached.written,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": answer.prompt_tokens + output_tokens as u64,
    })
}

/// The `response` object in `status`, with `output` and `usage`, and the request's parameters
/// repeated over the defaults.
fn object(
    answer: &Answer,
    echo: &Map<String, Value>,
    status: &str,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
    let error =
        (status == "failed").then(|| json!({"code": "server_error", "message": SERVER_ERROR}));
    let mut object = json!({
        "id": response_id(answer),
        "object": "response",
        "created_at": answer.created,
        "status": status,
        "background": false,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": null,
        "max_tool_calls": null,
        "metadata": {},
        "model": answer.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "service_tier": "default",
        // Nothing is kept to be read back.
        "store": false,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
    });
    if let Some(fields) = object.as_object_mut() {
        for (name, value) in echo {
            fields.insert(name.clone(), value.clone());
        }
    }
    object
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The assistant message holding `content`.
fn message(answer: &Answer, status: &str, content: Vec<Value>) -> Value {
    json!({"type": "message", "id": message_id(answer), "status": status, "role": "assistant",
        "content": content})
}

/// A `response` object (`POST /v1/responses` without `stream`).
pub(crate) fn response(answer: &Answer, echo: &Map<String, Value>) -> Bytes {
    let status = status(answer);
    let output = vec![message(answer, status, vec![text_part(&answer.text())])];
    let usage = usage(answer, answer.words.len());
    Bytes::from(object(answer, echo, status, output, usage).to_string())
}

/// The SSE events of a streamed response, each with its delay (see the module docs).
pub(crate) fn response_stream(
    answer: &Answer,
    echo: &Map<String, Value>,
) -> (Vec<(Duration, Bytes)>, Ending) {
    let mut events = Events::default();
    let item_id = message_id(answer);
    let start = object(answer, echo, "in_progress", Vec::new(), Value::Null);
    events.push(
        Duration::ZERO,
        "response.created",
        json!({"response": start}),
    );
    events.push(
        Duration::ZERO,
        "response.in_progress",
        json!({"response": start}),
    );
    let item = message(answer, "in_progress", Vec::new());
    let at = json!({"item_id": item_id, "output_index": 0, "content_index": 0});
    events.push(
        Duration::ZERO,
        "response.output_item.added",
        json!({"output_index": 0, "item": item}),
    );
    events.push(
        Duration::ZERO,
        "response.content_part.added",
        with(&at, json!({"part": text_part("")})),
    );
    let sent = answer.streamed_tokens();
    for i in 0..sent {
        let delay = if i == 0 {
            Duration::ZERO
        } else {
            answer.per_token
        };
        let delta = json!({"delta": answer.piece(i), "logprobs": []});
        events.push(delay, "response.output_text.delta", with(&at, delta));
    }
    match answer.broken {
        Some(Break::Disconnect(_)) => return (events.into_inner(), Ending::Disconnect),
        Some(Break::Stall(_)) => return (events.into_inner(), Ending::Stall),
        Some(Break::ErrorEvent(_)) => {
            let error = json!({"code": "server_error", "message": SERVER_ERROR, "param": null});
            events.push(answer.per_token, "error", error);
            let failed = object(answer, echo, "failed", Vec::new(), Value::Null);
            events.push(
                Duration::ZERO,
                "response.failed",
                json!({"response": failed}),
            );
            return (events.into_inner(), Ending::Finish);
        }
        None => {}
    }
    let text = answer.text();
    events.push(
        answer.per_token,
        "response.output_text.done",
        with(&at, json!({"text": text, "logprobs": []})),
    );
    events.push(
        Duration::ZERO,
        "response.content_part.done",
        with(&at, json!({"part": text_part(&text)})),
    );
    let status = status(answer);
    let item = message(answer, status, vec![text_part(&text)]);
    events.push(
        Duration::ZERO,
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    let done = object(answer, echo, status, vec![item], usage(answer, sent));
    let last = if answer.truncated {
        "response.incomplete"
    } else {
        "response.completed"
    };
    events.push(Duration::ZERO, last, json!({"response": done}));
    (events.into_inner(), Ending::Finish)
}

/// `fields` with those of `at` (which content part an event is about).
fn with(at: &Value, mut fields: Value) -> Value {
    if let (Some(at), Some(fields)) = (at.as_object(), fields.as_object_mut()) {
        for (name, value) in at {
            fields.insert(name.clone(), value.clone());
        }
    }
    fields
}

/// SSE events numbered in order.
#[derive(Default)]
struct Events {
    events: Vec<(Duration, Bytes)>,
}

impl Events {
    /// Adds event `kind` after `delay`: its `data` is `fields` with `type` and
    /// `sequence_number`.
    fn push(&mut self, delay: Duration, kind: &str, mut fields: Value) {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.events.len());
        let event = format!("event: {kind}\ndata: {fields}\n\n");
        self.events.push((delay, Bytes::from(event)));
    }

    fn into_inner(self) -> Vec<(Duration, Bytes)> {
        self.events
    }
}
