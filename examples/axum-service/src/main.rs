//! An axum service whose handler calls an LLM through Tollgate's standard stack: `POST
//! /summarise {"text": "..."}` answers `{"summary": "..."}`; `GET /health` shows the stack.
//!
//! Without `TOLLGATE_BASE_URL` it starts `tollgate-sim` on loopback and calls that, sends two
//! requests to itself, prints the answers, and exits:
//!
//! ```sh
//! cargo run -p example-axum-service
//! ```
//!
//! With `TOLLGATE_BASE_URL` (and `OPENAI_API_KEY`, sent and never printed) it serves on
//! 127.0.0.1:3000 until stopped.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate::{LlmService, LlmStack, Preset, StackHandle};
use tower::ServiceExt;

#[derive(Clone)]
struct App {
    llm: LlmService,
    handle: StackHandle,
    base: String,
    key: String,
}

#[derive(Deserialize)]
struct Summarise {
    text: String,
}

async fn summarise(
    State(app): State<App>,
    Json(input): Json<Summarise>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 64, "temperature": 0,
        "messages": [{"role": "system", "content": "Summarise in one sentence."},
                     {"role": "user", "content": input.text}]});
    let request = http::Request::post(format!("{}/chat/completions", app.base))
        .header("authorization", format!("Bearer {}", app.key))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Rate limits, retries, the breaker and the adaptive limit all apply here.
    let response = app
        .llm
        .oneshot(request)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?
        .to_bytes();
    let answer: Value =
        serde_json::from_slice(&bytes).map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    if !status.is_success() {
        return Err((StatusCode::BAD_GATEWAY, answer.to_string()));
    }
    Ok(Json(
        json!({"summary": answer["choices"][0]["message"]["content"]}),
    ))
}

async fn health(State(app): State<App>) -> Json<Value> {
    let scopes: Vec<Value> = app
        .handle
        .health()
        .into_iter()
        .map(|h| json!({"scope": h.scope.to_string(), "circuit": format!("{:?}", h.circuit),
                        "overload": h.overload.as_str(), "limit": h.limit, "in_flight": h.in_flight}))
        .collect();
    Json(json!({"scopes": scopes}))
}

#[tokio::main]
async fn main() -> Result<(), tollgate::core::BoxError> {
    let (base, sim) = match std::env::var("TOLLGATE_BASE_URL") {
        Ok(base) => (base, None),
        Err(_) => {
            let sim = tollgate_sim::Sim::start(tollgate_sim::SimConfig::default()).await?;
            (format!("{}/v1", sim.url()), Some(sim))
        }
    };
    let key = std::env::var("OPENAI_API_KEY").unwrap_or_else(|_| "sk-example".into());
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (llm, handle) = LlmStack::preset(Preset::Balanced).service(client);
    let app = Router::new()
        .route("/summarise", post(summarise))
        .route("/health", get(health))
        .with_state(App {
            llm,
            handle,
            base,
            key,
        });

    if sim.is_none() {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 3000))).await?;
        println!("serving on http://127.0.0.1:3000");
        axum::serve(listener, app).await?;
        return Ok(());
    }
    // Against the simulator: call the service in process, twice, and show what it said.
    for text in [
        "Rust is a language empowering everyone to build reliable software.",
        "Tollgate paces LLM calls.",
    ] {
        let request = http::Request::post("/summarise")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(json!({"text": text}).to_string()))?;
        let response = app.clone().oneshot(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!("{status} {}", String::from_utf8_lossy(&body));
    }
    let request = http::Request::get("/health").body(axum::body::Body::empty())?;
    let body = app
        .oneshot(request)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    println!("health: {}", String::from_utf8_lossy(&body));
    Ok(())
}
