//! Streamed answers translated event by event, as they arrive: an Anthropic
//! `message_start` … `message_stop` stream becomes OpenAI `chat.completion.chunk`s ending in
//! `[DONE]`, and the other way round.
//!
//! Each upstream event is read into a neutral [`Delta`] and written in the client's format at
//! once; nothing waits for the end of the stream. The network may cut the upstream's bytes
//! anywhere: the SSE parser (`tollgate_core::usage::SseParser`) keeps only a cut line, and at
//! most [`MAX_EVENT_BYTES`] of one event, so a hostile stream cannot grow it.

use serde_json::{Value, json};
use tollgate_core::usage::{SseEvent, SseParser};

use crate::chat::{Finish, Usage};
use crate::failure::Failure;
use crate::{Format, anthropic, openai};

/// The most one upstream event may hold.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One step of a streamed answer, in neutral form.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    /// The answer begins.
    Start {
        /// The upstream's id for it.
        id: String,
        /// The model that answers.
        model: String,
    },
    /// More text.
    Text(String),
    /// A tool call begins (`index`: the how-manieth call of the answer).
    ToolCall {
        /// The how-manieth call.
        index: usize,
        /// Its id.
        id: String,
        /// The tool.
        name: String,
    },
    /// More of a tool call's arguments (a piece of JSON text).
    Arguments {
        /// The how-manieth call.
        index: usize,
        /// The piece.
        json: String,
    },
    /// Why generation stopped.
    Finish(Finish),
    /// What the answer used so far (later ones replace earlier ones, field by field).
    Usage(Usage),
    /// The upstream failed mid-stream.
    Error(Failure),
    /// The stream ended.
    Done,
}

/// Translates one streamed answer from `from`'s events to `to`'s, chunk by chunk.
#[derive(Debug)]
pub struct StreamTranslator {
    parser: SseParser,
    reader: Reader,
    writer: Writer,
}

impl StreamTranslator {
    /// A translator of an answer streamed in `from`'s format for a client of `to`'s, created
    /// at `created` (Unix seconds, for OpenAI's chunks).
    pub fn new(from: Format, to: Format, created: u64) -> Self {
        Self {
            parser: SseParser::new().with_max_event_bytes(MAX_EVENT_BYTES),
            reader: Reader::new(from),
            writer: Writer::new(to, created),
        }
    }

    /// Translates the next chunk of the upstream's body: what the client gets for it (empty
    /// while an event is incomplete).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (reader, writer) = (&mut self.reader, &mut self.writer);
        self.parser.feed(chunk, |event: &SseEvent<'_>| {
            for delta in reader.read(event) {
                writer.write(&delta, &mut out);
            }
        });
        out
    }

    /// The upstream's body ended: what the client still gets (the end of its stream, if the
    /// upstream's did not say so).
    pub fn finish(&mut self) -> Vec<u8> {
        self.parser.finish();
        let mut out = Vec::new();
        if !self.writer.done {
            self.writer.write(&Delta::Done, &mut out);
        }
        out
    }
}

/// Reads upstream events into deltas.
#[derive(Debug)]
struct Reader {
    format: Format,
    started: bool,
    usage: Usage,
    /// Anthropic: the tool call each content block is, by block index.
    blocks: Vec<Option<usize>>,
    calls: usize,
}

impl Reader {
    fn new(format: Format) -> Self {
        Self {
            format,
            started: false,
            usage: Usage::default(),
            blocks: Vec::new(),
            calls: 0,
        }
    }

    fn read(&mut self, event: &SseEvent<'_>) -> Vec<Delta> {
        match self.format {
            Format::OpenAiChat => self.read_openai(event),
            Format::AnthropicMessages => self.read_anthropic(event),
        }
    }

    fn read_openai(&mut self, event: &SseEvent<'_>) -> Vec<Delta> {
        if event.data == b"[DONE]" {
            return vec![Delta::Done];
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(event.data) else {
            return Vec::new();
        };
        let mut deltas = Vec::new();
        if chunk.get("error").is_some() {
            deltas.push(Delta::Error(openai::read_error(500, event.data)));
            return deltas;
        }
        if !self.started {
            self.started = true;
            deltas.push(Delta::Start {
                id: str_of(&chunk, "/id"),
                model: str_of(&chunk, "/model"),
            });
        }
        if let Some(delta) = chunk.pointer("/choices/0/delta") {
            if let Some(text) = delta.get("content").and_then(Value::as_str)
                && !text.is_empty()
            {
                deltas.push(Delta::Text(text.to_owned()));
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .and_then(|i| usize::try_from(i).ok())
                    .unwrap_or(0);
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    deltas.push(Delta::ToolCall {
                        index,
                        id: id.to_owned(),
                        name: str_of(call, "/function/name"),
                    });
                }
                if let Some(json) = call.pointer("/function/arguments").and_then(Value::as_str)
                    && !json.is_empty()
                {
                    deltas.push(Delta::Arguments {
                        index,
                        json: json.to_owned(),
                    });
                }
            }
        }
        if let Some(reason) = chunk
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
        {
            deltas.push(Delta::Finish(openai::finish_of(Some(reason))));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            deltas.push(Delta::Usage(openai::usage_of(Some(usage))));
        }
        deltas
    }

    fn read_anthropic(&mut self, event: &SseEvent<'_>) -> Vec<Delta> {
        let Ok(data) = serde_json::from_slice::<Value>(event.data) else {
            return Vec::new();
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event);
        match kind {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                self.usage = anthropic::usage_of(message.get("usage"));
                vec![
                    Delta::Start {
                        id: str_of(message, "/id"),
                        model: str_of(message, "/model"),
                    },
                    Delta::Usage(self.usage),
                ]
            }
            "content_block_start" => {
                let index = block_index(&data);
                let block = data.get("content_block").unwrap_or(&Value::Null);
                if self.blocks.len() <= index {
                    // Bounded by the event cap: an index is a number in one event.
                    self.blocks.resize(index.min(1 << 16) + 1, None);
                }
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return match block.get("text").and_then(Value::as_str) {
                        Some(text) if !text.is_empty() => vec![Delta::Text(text.to_owned())],
                        _ => Vec::new(),
                    };
                }
                let call = self.calls;
                self.calls += 1;
                if let Some(slot) = self.blocks.get_mut(index) {
                    *slot = Some(call);
                }
                vec![Delta::ToolCall {
                    index: call,
                    id: str_of(block, "/id"),
                    name: str_of(block, "/name"),
                }]
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => vec![Delta::Text(str_of(delta, "/text"))],
                    Some("input_json_delta") => {
                        let call = self.blocks.get(block_index(&data)).copied().flatten();
                        call.map_or_else(Vec::new, |index| {
                            vec![Delta::Arguments {
                                index,
                                json: str_of(delta, "/partial_json"),
                            }]
                        })
                    }
                    // Thinking and its signature have no place in the other formats.
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                let mut deltas = Vec::new();
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    deltas.push(Delta::Finish(anthropic::finish_of(Some(reason))));
                }
                if let Some(usage) = data.get("usage") {
                    // Each count it carries replaces the one from message_start.
                    let late = anthropic::usage_of(Some(usage));
                    let has = |field: &str| usage.get(field).is_some();
                    if has("input_tokens") {
                        self.usage.input = late.input;
                    }
                    if has("cache_read_input_tokens") {
                        self.usage.cached_input = late.cached_input;
                    }
                    if has("cache_creation_input_tokens") {
                        self.usage.cache_write = late.cache_write;
                    }
                    self.usage.output = late.output;
                    deltas.push(Delta::Usage(self.usage));
                }
                deltas
            }
            "message_stop" => vec![Delta::Done],
            "error" => vec![Delta::Error(anthropic::read_error(500, event.data))],
            _ => Vec::new(),
        }
    }
}

fn str_of(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn block_index(data: &Value) -> usize {
    data.get("index")
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
        .unwrap_or(0)
}

/// What an Anthropic client's stream has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text(usize),
    Tool { block: usize, call: usize },
}

/// Writes deltas as the client's events.
#[derive(Debug)]
struct Writer {
    format: Format,
    created: u64,
    id: String,
    model: String,
    started: bool,
    done: bool,
    finish: Option<Finish>,
    usage: Option<Usage>,
    /// Anthropic: the block open now, and how many were opened.
    open: Option<Block>,
    blocks: usize,
}

impl Writer {
    fn new(format: Format, created: u64) -> Self {
        Self {
            format,
            created,
            id: String::new(),
            model: String::new(),
            started: false,
            done: false,
            finish: None,
            usage: None,
            open: None,
            blocks: 0,
        }
    }

    fn write(&mut self, delta: &Delta, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if let Delta::Start { id, model } = delta {
            self.id.clone_from(id);
            self.model.clone_from(model);
        }
        match self.format {
            Format::OpenAiChat => self.write_openai(delta, out),
            Format::AnthropicMessages => self.write_anthropic(delta, out),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<Finish>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null,
                "finish_reason": finish.map(openai::finish_reason)}],
        })
    }

    fn write_openai(&mut self, delta: &Delta, out: &mut Vec<u8>) {
        let data = |out: &mut Vec<u8>, value: &Value| {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(value.to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
        };
        match delta {
            Delta::Start { .. } => {
                self.started = true;
                data(
                    out,
                    &self.chunk(json!({"role": "assistant", "content": ""}), None),
                );
            }
            Delta::Text(text) => data(out, &self.chunk(json!({"content": text}), None)),
            Delta::ToolCall { index, id, name } => data(
                out,
                &self.chunk(
                    json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                    None,
                ),
            ),
            Delta::Arguments { index, json } => data(
                out,
                &self.chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": json}}]}),
                    None,
                ),
            ),
            Delta::Finish(finish) => data(out, &self.chunk(json!({}), Some(*finish))),
            Delta::Usage(usage) => self.usage = Some(*usage),
            Delta::Error(failure) => {
                // The stream ends with its error: nothing follows it.
                data(out, &openai::write_error(failure).1);
                self.done = true;
            }
            Delta::Done => {
                if let Some(usage) = self.usage {
                    let mut last = self.chunk(json!({}), None);
                    last["choices"] = json!([]);
                    last["usage"] = openai::usage_json(&usage);
                    data(out, &last);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
        }
    }

    fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(Block::Text(index) | Block::Tool { block: index, .. }) = self.open.take() {
            Self::event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, out: &mut Vec<u8>, block: Value) -> usize {
        self.close_block(out);
        let index = self.blocks;
        self.blocks += 1;
        Self::event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    fn write_anthropic(&mut self, delta: &Delta, out: &mut Vec<u8>) {
        match delta {
            Delta::Start { id, model } => {
                self.started = true;
                let usage = anthropic::usage_json(&self.usage.unwrap_or_default());
                Self::event(
                    out,
                    "message_start",
                    &json!({"type": "message_start", "message": {"id": id, "type": "message",
                        "role": "assistant", "model": model, "content": [],
                        "stop_reason": null, "stop_sequence": null, "usage": usage}}),
                );
            }
            Delta::Text(text) => {
                let index = match self.open {
                    Some(Block::Text(index)) => index,
                    _ => {
                        let index = self.open_block(out, json!({"type": "text", "text": ""}));
                        self.open = Some(Block::Text(index));
                        index
                    }
                };
                Self::event(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": text}}),
                );
            }
            Delta::ToolCall { index, id, name } => {
                let block = self.open_block(
                    out,
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
                self.open = Some(Block::Tool {
                    block,
                    call: *index,
                });
            }
            Delta::Arguments { index, json } => {
                // Anthropic's blocks follow one another: arguments of a call whose block
                // closed already have nowhere to go (OpenAI sends each call's in turn).
                if let Some(Block::Tool { block, call }) = self.open
                    && call == *index
                {
                    Self::event(
                        out,
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": block,
                            "delta": {"type": "input_json_delta", "partial_json": json}}),
                    );
                }
            }
            Delta::Finish(finish) => self.finish = Some(*finish),
            Delta::Usage(usage) => self.usage = Some(*usage),
            Delta::Error(failure) => {
                let (_, body) = anthropic::write_error(failure);
                Self::event(out, "error", &body);
                self.done = true;
            }
            Delta::Done => {
                self.close_block(out);
                let usage = anthropic::usage_json(&self.usage.unwrap_or_default());
                let reason = anthropic::stop_reason(self.finish.unwrap_or(Finish::Stop));
                Self::event(
                    out,
                    "message_delta",
                    &json!({"type": "message_delta",
                        "delta": {"stop_reason": reason, "stop_sequence": null},
                        "usage": usage}),
                );
                Self::event(out, "message_stop", &json!({"type": "message_stop"}));
                self.done = true;
            }
        }
    }
}
