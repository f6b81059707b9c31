use tollgate::StackConfig;
use tollgate_sim::{Sim, SimConfig, SimHandle};

use super::*;

fn http() -> HttpClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

async fn sim(config: &str) -> SimHandle {
    Sim::start(SimConfig::from_toml(config).unwrap())
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn chat_streams_and_embeddings_go_through_the_stack() {
    let sim = sim("seed = 7").await;
    let (llm, handle) = LlmStack::preset(Preset::Balanced).service(http());
    let client = openai_client(llm, &format!("{}/v1", sim.url()), "sk-test");

    let report = demo(&client).await.unwrap();
    print(&report, &handle);

    assert_eq!(report.answers.len(), 3);
    assert!(report.answers.iter().all(|a| !a.is_empty()), "{report:?}");
    assert!(
        report.chunks > 1,
        "the stream came in one piece: {report:?}"
    );
    assert!(!report.streamed.is_empty());
    assert_eq!(report.vectors, 4);
    assert_eq!(report.dimensions, 1536);
    let stats = sim.stats();
    // Three chats, one stream, one embeddings call: nothing retried, nothing lost.
    assert_eq!(stats.received, 5, "{stats:?}");
    assert_eq!(stats.accepted, 5, "{stats:?}");
    let health = handle.health();
    assert!(!health.is_empty());
    assert!(health.iter().all(|h| h.in_flight == 0), "{health:?}");
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_sdk_does_not_retry_on_top_of_the_stack() {
    // Every call fails with a 500: async-openai alone would send 4, the stack 1 + 2 retries.
    let sim = sim("[faults]\nerror_rate = 1.0").await;
    let config =
        StackConfig::from_toml("[backoff_strategy]\nmax_retries = 2\ninitial_delay = \"100ms\"")
            .unwrap();
    let (llm, _handle) = LlmStack::new(&config).unwrap().service(http());
    let client = openai_client(llm, &format!("{}/v1", sim.url()), "sk-test");

    let error = client
        .chat()
        .create(chat("hello").unwrap())
        .await
        .unwrap_err();

    assert_eq!(sim.stats().received, 3, "{error}");
    match error {
        OpenAIError::ApiError(api) => {
            // async-openai keeps a 5xx body as the message, unparsed.
            assert_eq!(api.status_code.as_u16(), 500);
            assert!(api.api_error.message.contains("server_error"), "{api:?}");
        }
        other => panic!("expected the upstream's 500 as an ApiError, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_refusal_by_the_stack_downcasts_to_tollgates_error() {
    // Five 500s in a row open the balanced preset's breaker; the next call is refused
    // before it is sent.
    let sim = sim("[faults]\nerror_rate = 1.0").await;
    let config = StackConfig::from_toml("[backoff_strategy]\nmax_retries = 0").unwrap();
    let (llm, handle) = LlmStack::new(&config).unwrap().service(http());
    let client = openai_client(llm, &format!("{}/v1", sim.url()), "sk-test");
    let mut refused = None;
    for _ in 0..20 {
        match client.chat().create(chat("hello").unwrap()).await {
            Err(OpenAIError::Boxed(error)) => {
                refused = Some(error);
                break;
            }
            Err(OpenAIError::ApiError(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let refused = refused.expect("the breaker never opened");
    let open = refused
        .downcast_ref::<tollgate::core::error::CircuitOpen>()
        .unwrap_or_else(|| panic!("expected CircuitOpen, got {refused}"));
    assert!(open.retry_after.is_some());
    let sent = sim.stats().received;
    assert!(sent < 20, "{sent}");
    assert!(
        handle
            .health()
            .iter()
            .any(|h| h.circuit != tollgate::circuit::CircuitState::Closed)
    );
    sim.shutdown().await;
}
