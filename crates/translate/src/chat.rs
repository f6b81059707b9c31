//! The neutral form of a chat call that every format is read into and written from: three
//! formats need six mappings through it, not six pairs of them.
//!
//! It holds what the formats share (a system prompt, turns of text, images, tool calls and
//! their results, the sampling parameters, tools, the answer, its usage and why it stopped).
//! What only one format has is not in it: reading such a field reports it as
//! [untranslatable](crate::Untranslatable) instead.

use serde_json::Value;

/// A chat request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// The model asked for.
    pub model: Option<String>,
    /// The system prompt, in parts, in order.
    pub system: Vec<String>,
    /// The turns, in order.
    pub messages: Vec<Message>,
    /// The most output tokens.
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Where generation stops.
    pub stop: Vec<String>,
    /// How many answers (only 1 is translatable to a format that has no `n`).
    pub n: Option<u64>,
    /// Streamed.
    pub stream: bool,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// Whether, and which, tool it must call.
    pub tool_choice: Option<ToolChoice>,
    /// Whether the answer must be JSON.
    pub response_format: Option<ResponseFormat>,
    /// Who the end user is, for the provider's abuse monitoring.
    pub user: Option<String>,
}

/// One turn.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said, in order.
    pub parts: Vec<Part>,
}

/// Who speaks a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The user (tool results are the user's turn).
    User,
    /// The model.
    Assistant,
}

/// A piece of a turn.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Text.
    Text(String),
    /// An image.
    Image(Image),
    /// The model calls a tool.
    ToolCall {
        /// The call's id, which its result names.
        id: String,
        /// The tool.
        name: String,
        /// Its arguments, a JSON object.
        arguments: Value,
    },
    /// A tool call's result.
    ToolResult {
        /// The id of the call.
        id: String,
        /// What the tool returned, as text.
        content: String,
        /// Whether the tool failed.
        is_error: bool,
    },
}

/// An image in a turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// Fetched by the provider.
    Url(String),
    /// Sent inline.
    Base64 {
        /// `image/png`, `image/jpeg`, ….
        media_type: String,
        /// The bytes, base64.
        data: String,
    },
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Its arguments' JSON Schema.
    pub parameters: Value,
}

/// Whether the model must call a tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// As it sees fit.
    Auto,
    /// Never.
    None,
    /// Some tool.
    Required,
    /// This one.
    Named(String),
}

/// The answer's shape.
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object.
    Json,
    /// JSON that follows a schema.
    Schema {
        /// The schema's name.
        name: String,
        /// The schema.
        schema: Value,
        /// Whether the provider must follow it exactly.
        strict: bool,
    },
}

/// A chat answer (the first choice).
#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    /// The upstream's id for it.
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// Text and tool calls, in order.
    pub parts: Vec<Part>,
    /// Why generation stopped.
    pub finish: Finish,
    /// What it used.
    pub usage: Usage,
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The answer ended, or met a stop sequence.
    Stop,
    /// `max_tokens` ran out.
    Length,
    /// The model called tools and waits for their results.
    ToolCalls,
    /// The provider withheld or cut the answer (a content filter, a refusal).
    ContentFilter,
}

/// Tokens a call used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens billed at the full price.
    pub input: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write: u64,
    /// Output tokens.
    pub output: u64,
}

impl Usage {
    /// Every input token, however billed.
    pub fn all_input(&self) -> u64 {
        self.input + self.cached_input + self.cache_write
    }
}
