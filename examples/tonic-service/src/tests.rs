use tollgate::StackConfig;
use tollgate::core::RateLimitDimension;
use tollgate::core::error::{CircuitOpen, ExceedsLimit, Overloaded, QueueTimeout, RateLimited};
use tollgate_sim::{Sim, SimConfig, SimHandle};

use super::*;

async fn sim(config: &str) -> SimHandle {
    Sim::start(SimConfig::from_toml(config).unwrap())
        .await
        .unwrap()
}

/// The server over `sim` with the balanced preset and `max_retries` retries.
async fn server(sim: &SimHandle, key: &str, max_retries: u32) -> (GrpcServer, StackHandle) {
    let config =
        StackConfig::from_toml(&format!("[backoff_strategy]\nmax_retries = {max_retries}"))
            .unwrap();
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (llm, handle) = LlmStack::new(&config).unwrap().service(http);
    let service = SummarizerService::new(llm, &format!("{}/v1", sim.url()), key).unwrap();
    (GrpcServer::start(service).await.unwrap(), handle)
}

fn pushback(status: &Status) -> Option<u64> {
    status.metadata().get(PUSHBACK)?.to_str().ok()?.parse().ok()
}

#[tokio::test(start_paused = true)]
async fn the_demo_answers_and_maps_a_bad_request_and_a_missed_deadline() {
    let sim = sim(SIM).await;
    let (server, handle) = server(&sim, "sk-test", 2).await;

    let answers = demo(server.addr).await.unwrap();
    print(&answers, &handle);

    for (_, answer) in &answers[..3] {
        let summary = answer.as_ref().unwrap();
        assert!(!summary.summary.is_empty());
        assert!(summary.output_tokens > 0);
    }
    let empty = answers[3].1.as_ref().unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    let late = answers[4].1.as_ref().unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    // The three summaries; the empty text never left the service (and the simulator logs no
    // call its client abandoned, as the late one was).
    let stats = sim.stats();
    assert_eq!((stats.received, stats.accepted), (3, 3), "{:?}", sim.log());
    // Nothing is left holding a permit.
    assert!(handle.health().iter().all(|h| h.in_flight == 0));
    server.stop().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_unavailable_with_a_pushback() {
    let sim = sim("[faults]\nerror_rate = 1.0").await;
    let (server, _handle) = server(&sim, "sk-test", 0).await;
    let mut client = SummarizerClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();

    let mut statuses = Vec::new();
    for _ in 0..10 {
        let text = Text {
            text: "hello".into(),
        };
        statuses.push(client.summarize(text).await.unwrap_err());
    }

    // The 500s themselves are UNAVAILABLE; then the breaker opens and says how long.
    assert!(statuses.iter().all(|s| s.code() == Code::Unavailable));
    let open = statuses
        .iter()
        .find(|s| s.message().starts_with("circuit open"))
        .expect("the breaker never opened");
    assert!(pushback(open).is_some_and(|ms| ms > 0), "{open:?}");
    assert!(sim.stats().received < 10);
    server.stop().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_quota_is_resource_exhausted_and_not_retried() {
    let sim = sim("[[keys]]\nkey = \"sk-empty\"\nquota_exhausted = true").await;
    let (server, _handle) = server(&sim, "sk-empty", 3).await;
    let mut client = SummarizerClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();

    let status = client
        .summarize(Text {
            text: "hello".into(),
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(pushback(&status), None);
    assert!(!status.message().contains("sk-empty"));
    assert_eq!(sim.stats().received, 1);
    server.stop().await.unwrap();
    sim.shutdown().await;
}

#[test]
fn tollgates_refusals_map_to_grpc_codes_with_their_wait() {
    let wait = Some(Duration::from_millis(1500));
    let cases: Vec<(BoxError, Code, Option<u64>)> = vec![
        (
            Box::new(RateLimited {
                dimension: RateLimitDimension::Tokens,
                retry_after: wait,
            }),
            Code::ResourceExhausted,
            Some(1500),
        ),
        (
            Box::new(CircuitOpen::new(wait)),
            Code::Unavailable,
            Some(1500),
        ),
        (
            Box::new(Overloaded { retry_after: None }),
            Code::Unavailable,
            None,
        ),
        (
            Box::new(QueueTimeout {
                waited: Duration::from_secs(2),
            }),
            Code::DeadlineExceeded,
            None,
        ),
        (
            Box::new(ExceedsLimit {
                dimension: RateLimitDimension::Tokens,
                requested: 9,
                limit: 5,
            }),
            Code::InvalidArgument,
            None,
        ),
    ];
    for (error, code, wait_ms) in cases {
        let status = status_for_error(error.as_ref());
        assert_eq!(status.code(), code, "{error}");
        assert_eq!(pushback(&status), wait_ms, "{error}");
        assert_eq!(status.message(), error.to_string());
    }
}

#[test]
fn upstream_outcomes_map_to_grpc_codes() {
    let cases = [
        (OutcomeKind::QuotaExhausted, Code::ResourceExhausted),
        (OutcomeKind::ServerError, Code::Unavailable),
        (OutcomeKind::ConnectError, Code::Unavailable),
        (OutcomeKind::ConnectionLost, Code::Unavailable),
        (OutcomeKind::Timeout, Code::DeadlineExceeded),
        (OutcomeKind::ClientError, Code::InvalidArgument),
        (OutcomeKind::ContextLengthExceeded, Code::InvalidArgument),
        (OutcomeKind::AuthError, Code::Internal),
    ];
    for (kind, code) in cases {
        let outcome = Outcome::new(kind).with_retry_after(Some(Duration::from_secs(3)));
        let status = status_for(&outcome, "x");
        assert_eq!(status.code(), code, "{kind}");
        // A wait is passed on unless waiting cannot help.
        let expected = (!kind.is_permanent()).then_some(3000);
        assert_eq!(pushback(&status), expected, "{kind}");
    }
}

#[test]
fn grpc_timeouts_parse_in_every_unit() {
    let parse = |value: &'static str| {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", MetadataValue::from_static(value));
        grpc_timeout(&metadata)
    };
    assert_eq!(parse("50m"), Some(Duration::from_millis(50)));
    assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
    assert_eq!(parse("1M"), Some(Duration::from_secs(60)));
    assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
    assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
    assert_eq!(parse("9n"), Some(Duration::from_nanos(9)));
    assert_eq!(parse("5x"), None);
    assert_eq!(parse("m"), None);
    assert_eq!(grpc_timeout(&MetadataMap::new()), None);
}
