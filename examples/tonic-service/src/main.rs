//! A tonic gRPC service whose handler calls an LLM through Tollgate's standard stack.
//!
//! ```proto
//! syntax = "proto3";
//! package tollgate.example;
//! service Summarizer { rpc Summarize(Text) returns (Summary); }
//! message Text { string text = 1; }
//! message Summary { string summary = 1; uint32 output_tokens = 2; }
//! ```
//!
//! No `protoc` is needed: `build.rs` defines the service with tonic-build's `manual` module and
//! the messages are `prost` structs written by hand ([`proto`]), so the wire format is ordinary
//! protobuf and any gRPC client can call it with the definition above.
//!
//! `Summarize` sends one chat completion through [`tollgate::LlmService`] and maps what the
//! stack says to a gRPC status ([`status_for`]):
//!
//! | Tollgate                                                       | gRPC                 |
//! |----------------------------------------------------------------|----------------------|
//! | rate limited (local or a 429), quota exhausted                  | `RESOURCE_EXHAUSTED` |
//! | overloaded (529/503, throttled), circuit open, 5xx, no connection | `UNAVAILABLE`      |
//! | timeout (first byte, the caller's deadline, a queue wait)       | `DEADLINE_EXCEEDED`  |
//! | bad request, request too large, context length exceeded         | `INVALID_ARGUMENT`   |
//! | the service's own API key refused, an unreadable answer         | `INTERNAL`           |
//!
//! When the stack knows how long to wait (a `retry-after`, an open breaker's remaining time) the
//! status carries it as `grpc-retry-pushback-ms`, the metadata key gRPC's own retry policy reads
//! (gRFC A6); an exhausted quota never does, since waiting a few seconds cannot cure it.
//!
//! The caller's deadline (`grpc-timeout`) becomes the request's [`Deadline`], so the stack's
//! retries and timeouts stop in time to answer `DEADLINE_EXCEEDED` before the caller gives up.
//!
//! # Running it
//!
//! ```sh
//! cargo run -p example-tonic-service
//! ```
//!
//! starts `tollgate-sim` on loopback (150 ms to the first token), serves `Summarizer` on
//! 127.0.0.1 (any free port), and calls it: three summaries, an empty text, and one call with a
//! 50 ms deadline. With `TOLLGATE_BASE_URL` (an OpenAI-compatible base over plain HTTP, such as
//! `http://127.0.0.1:8080/v1`) and `OPENAI_API_KEY` (sent upstream, never printed) the handler
//! calls that instead of the simulator.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tollgate::core::classify::{classify_error, response_outcome};
use tollgate::core::{BoxError, Deadline, Outcome, OutcomeKind};
use tollgate::{LlmService, LlmStack, Preset, StackHandle};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};
use tower::ServiceExt;

use self::rpc::summarizer_client::SummarizerClient;
use self::rpc::summarizer_server::{Summarizer, SummarizerServer};

pub(crate) mod proto {
    //! The messages, written by hand instead of generated from a `.proto` file.

    /// A text to summarise.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Text {
        /// The text.
        #[prost(string, tag = "1")]
        pub(crate) text: String,
    }

    /// The summary.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Summary {
        /// One sentence.
        #[prost(string, tag = "1")]
        pub(crate) summary: String,
        /// The tokens the model wrote, as the provider reported them.
        #[prost(uint32, tag = "2")]
        pub(crate) output_tokens: u32,
    }
}

// What build.rs generated: `summarizer_server` and `summarizer_client`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod rpc {
    include!(concat!(env!("OUT_DIR"), "/tollgate.example.Summarizer.rs"));
}

use self::proto::{Summary, Text};

/// The metadata key of gRPC's retry pushback (gRFC A6): milliseconds to wait before retrying.
const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The gRPC status for a call that ended with `outcome`, with `message` (which must hold no
/// secret: it goes to the caller).
fn status_for(outcome: &Outcome, message: impl Into<String>) -> Status {
    let code = match outcome.kind {
        OutcomeKind::RateLimited(_) | OutcomeKind::QuotaExhausted => Code::ResourceExhausted,
        OutcomeKind::Overloaded
        | OutcomeKind::ServerError
        | OutcomeKind::ConnectError
        | OutcomeKind::ConnectionLost => Code::Unavailable,
        OutcomeKind::Timeout => Code::DeadlineExceeded,
        OutcomeKind::ClientError
        | OutcomeKind::RequestTooLarge
        | OutcomeKind::ContextLengthExceeded => Code::InvalidArgument,
        // The service's own key was refused: nothing the caller can fix.
        _ => Code::Internal,
    };
    let mut status = Status::new(code, message);
    if let Some(wait) = outcome.retry_after.filter(|_| !outcome.kind.is_permanent()) {
        status.metadata_mut().insert(
            PUSHBACK,
            MetadataValue::from(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        );
    }
    status
}

/// The gRPC status for an error the stack returned instead of a response.
fn status_for_error(error: &(dyn std::error::Error + 'static)) -> Status {
    status_for(&classify_error(error), error.to_string())
}

/// The caller's `grpc-timeout`, if it sent one (`"50m"`: 50 ms; units H, M, S, m, u, n).
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let unit_at = value.len().checked_sub(1)?;
    let amount: u64 = value.get(..unit_at)?.parse().ok()?;
    Some(match &value[unit_at..] {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The service: summaries from a chat model, through the stack.
#[derive(Clone)]
struct SummarizerService {
    llm: LlmService,
    base: String,
    /// `Bearer <key>`, marked sensitive so it is never printed.
    authorization: HeaderValue,
}

impl SummarizerService {
    fn new(llm: LlmService, base: &str, key: &str) -> Result<Self, BoxError> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {key}"))?;
        authorization.set_sensitive(true);
        Ok(Self {
            llm,
            base: base.to_owned(),
            authorization,
        })
    }
}

#[tonic::async_trait]
impl Summarizer for SummarizerService {
    async fn summarize(&self, request: Request<Text>) -> Result<Response<Summary>, Status> {
        // Stop a little before the caller's deadline (a tenth of it, at most 100 ms), so the
        // answer is back before the caller gives up.
        let deadline = grpc_timeout(request.metadata()).map(|timeout| {
            let margin = (timeout / 10).min(Duration::from_millis(100));
            Deadline(Instant::now() + (timeout - margin))
        });
        let text = request.into_inner().text;
        if text.trim().is_empty() {
            return Err(Status::invalid_argument("text is empty"));
        }
        let body = json!({"model": "gpt-4o-mini", "max_tokens": 64,
            "messages": [{"role": "system", "content": "Summarise in one sentence."},
                         {"role": "user", "content": text}]});
        let mut http = http::Request::post(format!("{}/chat/completions", self.base))
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Some(deadline) = deadline {
            http.extensions_mut().insert(deadline);
        }
        // Rate limits, retries, the breaker and the adaptive limit all apply here.
        let response = self
            .llm
            .clone()
            .oneshot(http)
            .await
            .map_err(|e| status_for_error(e.as_ref()))?;
        let outcome = response_outcome(&response);
        let http_status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| status_for_error(e.as_ref()))?
            .to_bytes();
        if !http_status.is_success() {
            return Err(status_for(
                &outcome,
                format!("upstream answered {http_status}: {}", outcome.kind),
            ));
        }
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("unreadable answer: {e}")))?;
        let summary = answer["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| Status::internal("the answer has no text"))?;
        let output_tokens = answer["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        Ok(Response::new(Summary {
            summary: summary.to_owned(),
            output_tokens: u32::try_from(output_tokens).unwrap_or(u32::MAX),
        }))
    }
}

/// The gRPC server, serving on loopback until stopped.
struct GrpcServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    async fn start(service: SummarizerService) -> Result<Self, BoxError> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SummarizerServer::new(service))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Ok(Self { addr, stop, task })
    }

    async fn stop(self) -> Result<(), BoxError> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// What one call brought back.
type Answer = Result<Summary, Status>;

/// Three summaries, an empty text, and a call with a deadline shorter than the model's
/// time to first token.
async fn demo(addr: SocketAddr) -> Result<Vec<(&'static str, Answer)>, BoxError> {
    let mut client = SummarizerClient::connect(format!("http://{addr}")).await?;
    let mut answers = Vec::new();
    for text in [
        "Rust is a language empowering everyone to build reliable and efficient software.",
        "Tollgate paces LLM calls by the provider's own rate-limit headers.",
        "A circuit breaker fails fast while the upstream is down, then probes it.",
    ] {
        let answer = client.summarize(Text { text: text.into() }).await;
        answers.push(("summary", answer.map(Response::into_inner)));
    }
    let empty = client.summarize(Text::default()).await;
    answers.push(("empty text", empty.map(Response::into_inner)));
    let mut hurried = Request::new(Text {
        text: "No time for this one.".into(),
    });
    hurried.set_timeout(Duration::from_millis(50));
    let hurried = client.summarize(hurried).await;
    answers.push(("50 ms deadline", hurried.map(Response::into_inner)));
    Ok(answers)
}

fn print(answers: &[(&str, Answer)], handle: &StackHandle) {
    for (what, answer) in answers {
        match answer {
            Ok(summary) => println!(
                "{what:<15} OK ({} tokens): {}",
                summary.output_tokens, summary.summary
            ),
            Err(status) => {
                let pushback = status
                    .metadata()
                    .get(PUSHBACK)
                    .and_then(|v| v.to_str().ok())
                    .map(|ms| format!(", retry in {ms} ms"))
                    .unwrap_or_default();
                println!(
                    "{what:<15} {:?}: {}{pushback}",
                    status.code(),
                    status.message()
                );
            }
        }
    }
    for health in handle.health() {
        println!(
            "health          {} circuit {:?}, {}, limit {}, in flight {}",
            health.scope,
            health.circuit,
            health.overload.as_str(),
            health.limit,
            health.in_flight
        );
    }
}

/// The simulator the demo calls: healthy, 150 ms to the first token.
const SIM: &str = r#"
seed = 7
[latency]
time_to_first_token = "150ms"
"#;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (base, sim) = match std::env::var("TOLLGATE_BASE_URL") {
        Ok(base) => (base, None),
        Err(_) => {
            let sim = tollgate_sim::Sim::start(tollgate_sim::SimConfig::from_toml(SIM)?).await?;
            (format!("{}/v1", sim.url()), Some(sim))
        }
    };
    let key = std::env::var("OPENAI_API_KEY").unwrap_or_else(|_| "sk-example".into());
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (llm, handle) = LlmStack::preset(Preset::Balanced).service(http);
    let server = GrpcServer::start(SummarizerService::new(llm, &base, &key)?).await?;
    println!("serving tollgate.example.Summarizer on {}", server.addr);

    let answers = demo(server.addr).await?;
    print(&answers, &handle);
    server.stop().await?;
    if let Some(sim) = sim {
        println!("simulator       {} calls received", sim.stats().received);
        sim.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
