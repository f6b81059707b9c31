//! async-openai's `Client` calling through Tollgate's standard stack.
//!
//! async-openai (0.43, feature `middleware`) takes any tower service as its transport through
//! [`Client::with_http_service`]: the service receives an `HttpRequestFactory` (it builds a
//! `reqwest::Request`) and answers a `reqwest::Response`. [`ThroughTollgate`] is that service:
//! it turns the request into an `http::Request`, sends it through [`tollgate::LlmService`]
//! (rate limits, retries, the breaker, the adaptive limit, batching, the cache), and hands the
//! stack's response back with its body still streaming, so `create_stream` sees every chunk as
//! it arrives and the stack holds its permits until the last byte.
//!
//! # One retry layer, not two
//!
//! async-openai's default client retries 429s and 5xx itself (`OpenAIRetryLayer`, three
//! retries with its own exponential backoff). Under the stack that would multiply attempts: each
//! SDK retry is a new logical request to Tollgate, which retries it again (3 × 4 = 12 upstream
//! calls for one request instead of 4), spends the retry budget meant to stop a storm, restarts
//! the deadline, gets a new idempotency key, and sleeps on a clock the stack's rate limiter
//! cannot see. `with_http_service` replaces the default transport *and its retry layer*: the
//! service given here contains no `OpenAIRetryLayer`, so the stack is the only one retrying
//! (the `the_sdk_does_not_retry_on_top_of_the_stack` test checks the count of upstream calls).
//!
//! # Errors
//!
//! A request the stack refused or gave up on comes back as `OpenAIError::Boxed` holding
//! Tollgate's typed error (`CircuitOpen`, `RateLimited`, `RetriesExhausted`, ...), to downcast;
//! an upstream error answer reaches async-openai as the response it was and becomes its usual
//! `OpenAIError::ApiError`.
//!
//! # Running it
//!
//! Without `TOLLGATE_BASE_URL` it starts `tollgate-sim` on loopback, makes three chat
//! completions, one streamed chat and one embeddings call, and prints what came back and the
//! stack's health:
//!
//! ```sh
//! cargo run -p example-async-openai
//! ```
//!
//! With `TOLLGATE_BASE_URL` (an OpenAI-compatible base such as `http://127.0.0.1:8080/v1`;
//! plain HTTP: the hyper-util client below has no TLS) and `OPENAI_API_KEY` (sent, never
//! printed), it calls that instead.
//!
//! [`Client::with_http_service`]: async_openai::Client::with_http_service

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use tollgate::core::BoxError;
use tollgate::{LlmService, LlmStack, Preset, StackHandle};
use tower::Service;

/// async-openai's transport: every request goes through the Tollgate stack.
///
/// Readiness is the stack's: `poll_ready` asks the stack, and `call` moves the readied stack
/// into the response future (a fresh clone stays behind for the next call).
#[derive(Clone, Debug)]
struct ThroughTollgate {
    llm: LlmService,
}

impl Service<HttpRequestFactory> for ThroughTollgate {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        self.llm.poll_ready(cx).map_err(OpenAIError::Boxed)
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let fresh = self.llm.clone();
        let mut llm = std::mem::replace(&mut self.llm, fresh);
        Box::pin(async move {
            let request: http::Request<reqwest::Body> = factory
                .build()
                .await?
                .try_into()
                .map_err(OpenAIError::Reqwest)?;
            let (parts, body) = request.into_parts();
            // JSON bodies are one buffer already; the stack wants the whole body once, to parse
            // it once and replay it on a retry without copying.
            let body = body
                .collect()
                .await
                .map_err(OpenAIError::Reqwest)?
                .to_bytes();
            let response = llm
                .call(http::Request::from_parts(parts, Full::new(body)))
                .await
                .map_err(OpenAIError::Boxed)?;
            // The body stays a stream: SSE chunks reach the SDK as they come.
            Ok(response
                .map(|body| reqwest::Body::wrap_stream(body.into_data_stream()))
                .into())
        })
    }
}

/// An async-openai client whose every call goes through `llm`.
fn openai_client(llm: LlmService, base: &str, key: &str) -> Client<OpenAIConfig> {
    let config = OpenAIConfig::new().with_api_base(base).with_api_key(key);
    // No OpenAIRetryLayer here: Tollgate's retry layer is the only one (see the crate docs).
    Client::with_config(config).with_http_service(ThroughTollgate { llm })
}

/// What the demo got back.
#[derive(Debug)]
struct Report {
    /// The three chat answers.
    answers: Vec<String>,
    /// The streamed answer.
    streamed: String,
    /// How many stream chunks carried text.
    chunks: usize,
    /// How many vectors came back.
    vectors: usize,
    /// The size of the first one.
    dimensions: usize,
}

fn chat(prompt: &str) -> Result<CreateChatCompletionRequest, OpenAIError> {
    CreateChatCompletionRequestArgs::default()
        .model("gpt-4o-mini")
        .max_completion_tokens(48u32)
        .messages([
            ChatCompletionRequestSystemMessageArgs::default()
                .content("Answer in one sentence.")
                .build()?
                .into(),
            ChatCompletionRequestUserMessageArgs::default()
                .content(prompt)
                .build()?
                .into(),
        ])
        .build()
}

/// One chat completion's text.
async fn answer(client: &Client<OpenAIConfig>, prompt: &str) -> Result<String, OpenAIError> {
    let response = client.chat().create(chat(prompt)?).await?;
    Ok(response
        .choices
        .into_iter()
        .next()
        .and_then(|choice| choice.message.content)
        .unwrap_or_default())
}

/// Three chat completions (concurrently), one streamed chat, one embeddings call.
async fn demo(client: &Client<OpenAIConfig>) -> Result<Report, OpenAIError> {
    let (first, second, third) = tokio::join!(
        answer(client, "What is a token bucket?"),
        answer(client, "Why do retries need a budget?"),
        answer(client, "What does a circuit breaker protect?"),
    );
    let answers = vec![first?, second?, third?];

    let mut stream = client
        .chat()
        .create_stream(chat("Describe backpressure.")?)
        .await?;
    let mut streamed = String::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        for choice in chunk?.choices {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                streamed.push_str(&text);
                chunks += 1;
            }
        }
    }

    let embeddings = client
        .embeddings()
        .create(
            CreateEmbeddingRequestArgs::default()
                .model("text-embedding-3-small")
                .input(["tollgate", "token bucket", "circuit breaker", "backoff"])
                .build()?,
        )
        .await?;
    Ok(Report {
        answers,
        streamed,
        chunks,
        vectors: embeddings.data.len(),
        dimensions: embeddings.data.first().map_or(0, |e| e.embedding.len()),
    })
}

fn print(report: &Report, handle: &StackHandle) {
    for answer in &report.answers {
        println!("chat:       {answer}");
    }
    println!("streamed:   {} ({} chunks)", report.streamed, report.chunks);
    println!(
        "embeddings: {} vectors of {} dimensions",
        report.vectors, report.dimensions
    );
    for health in handle.health() {
        println!(
            "health:     {} circuit {:?}, {}, limit {}, in flight {}",
            health.scope,
            health.circuit,
            health.overload.as_str(),
            health.limit,
            health.in_flight
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (base, sim) = match std::env::var("TOLLGATE_BASE_URL") {
        Ok(base) => (base, None),
        Err(_) => {
            let sim = tollgate_sim::Sim::start(tollgate_sim::SimConfig::default()).await?;
            (format!("{}/v1", sim.url()), Some(sim))
        }
    };
    let key = std::env::var("OPENAI_API_KEY").unwrap_or_else(|_| "sk-example".into());
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (llm, handle) = LlmStack::preset(Preset::Balanced).service(http);
    let client = openai_client(llm, &base, &key);

    let report = demo(&client).await?;
    print(&report, &handle);
    if let Some(sim) = sim {
        println!("simulator:  {} calls received", sim.stats().received);
        sim.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
