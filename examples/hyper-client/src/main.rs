//! `tollgate-core` over a plain hyper-util client: one streamed chat completion, then what
//! Tollgate learned from it — the outcome, the provider's rate-limit headers, and the actual
//! token usage reported when the stream ended.
//!
//! Without arguments it starts `tollgate-sim` on loopback and calls that:
//!
//! ```sh
//! cargo run -p example-hyper-client
//! ```
//!
//! It works as well against any OpenAI-compatible server over plain HTTP (a local vLLM,
//! Ollama or llama.cpp server, or `tollgate sim` in another terminal):
//!
//! ```sh
//! TOLLGATE_BASE_URL=http://127.0.0.1:11434/v1 TOLLGATE_MODEL=llama3.2 \
//!     cargo run -p example-hyper-client
//! ```
//! `OPENAI_API_KEY`, when set, is sent as a bearer token (and never printed).

use std::sync::mpsc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::EndOfStream;
use tollgate_core::classify::{ClassifyLayer, classify_error};
use tollgate_core::{BoxError, Outcome, RateLimitSnapshot};
use tollgate_sim::{Sim, SimConfig};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let model = std::env::var("TOLLGATE_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into());
    // Keep the simulator (when we start one) alive until the end of main.
    let (base, _sim) = match std::env::var("TOLLGATE_BASE_URL") {
        Ok(base) => (base, None),
        Err(_) => {
            let sim = Sim::start(SimConfig::default()).await?;
            println!("started tollgate-sim at {}", sim.url());
            (format!("{}/v1", sim.url()), Some(sim))
        }
    };

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let llm = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(ClassifyLayer::new())
        .service(client);

    let body = format!(
        r#"{{"model":"{model}","max_tokens":64,"stream":true,"stream_options":{{"include_usage":true}},
            "messages":[{{"role":"user","content":"Say hello in five words."}}]}}"#
    );
    let mut request = http::Request::post(format!("{base}/chat/completions"))
        .header("content-type", "application/json");
    // The simulator accepts any key; a real server gets the one from the environment.
    let key = std::env::var("OPENAI_API_KEY")
        .ok()
        .or_else(|| _sim.as_ref().map(|_| "sk-example".to_owned()));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request.body(Full::new(Bytes::from(body)))?;

    let response = match llm.oneshot(request).await {
        Ok(response) => response,
        Err(error) => {
            let outcome = classify_error(error.as_ref());
            println!("transport error: {error} (outcome: {outcome})");
            return Ok(());
        }
    };
    let outcome = response.extensions().get::<Outcome>().cloned();
    let snapshot = response.extensions().get::<RateLimitSnapshot>().cloned();
    let (ended, end_report) = mpsc::channel();
    if let Some(end) = response.extensions().get::<EndOfStream>() {
        end.on_end(move |end| {
            let _ = ended.send(end.clone());
        });
    }
    println!("status:  {}", response.status());
    if let Some(outcome) = outcome {
        println!("outcome: {outcome} (retryable: {})", outcome.is_retryable());
    }
    if let Some(snapshot) = snapshot.filter(|s| !s.is_empty()) {
        println!(
            "limits:  requests {:?}, tokens {:?}",
            snapshot.requests, snapshot.tokens
        );
    }
    let body = response.into_body().collect().await?.to_bytes();
    println!("body:    {} bytes", body.len());
    if let Ok(end) = end_report.try_recv() {
        println!(
            "end:     {:?}, usage {:?}, error {:?}",
            end.reason, end.usage, end.error
        );
    }
    Ok(())
}
