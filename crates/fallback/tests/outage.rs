//! Graceful degradation through an outage: tollgate-sim scripted healthy 20 s → down 30 s →
//! healthy, behind a breaker, with a local fallback. Every caller gets an answer throughout,
//! every answer during the outage is marked degraded, and no call reaches the upstream while
//! the breaker is open. Two kinds of down: every request a 529, and every request hanging (so
//! the first-byte timeout trips the breaker). In-process simulator, paused time.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig, CircuitState};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{Provider, Scope};
use tollgate_fallback::{DEGRADED_HEADER, Degraded, FallbackLayer, Trigger};
use tollgate_sim::{SimConfig, SimService};
use tollgate_timeout::{TimeoutConfig, TimeoutLayer};
use tower::{ServiceBuilder, ServiceExt, service_fn};

const OUTAGE_START: Duration = Duration::from_secs(20);
const OUTAGE_END: Duration = Duration::from_secs(50);
const RUN: Duration = Duration::from_secs(90);
const CALLERS: usize = 4;

/// One call as its caller saw it.
#[derive(Debug)]
struct Call {
    sent: Duration,
    trigger: Option<Trigger>,
}

struct Outage {
    calls: Vec<Call>,
    /// Upstream calls made while the breaker was open (must be none).
    while_open: usize,
    /// Upstream calls during the outage (the breaker's trips and probes).
    upstream_during_outage: usize,
    /// Each transition and when.
    transitions: Vec<(Duration, CircuitState)>,
}

async fn outage(down: &str) -> Outage {
    let sim = SimService::new(
        SimConfig::from_toml(&format!(
            r#"
            [latency]
            time_to_first_token = "50ms"
            per_output_token = "5ms"
            [[phases]]
            name = "healthy"
            duration = "20s"
            [[phases]]
            name = "down"
            duration = "30s"
            [phases.faults]
            {down}
            [[phases]]
            name = "healthy again"
            duration = "120s"
            "#
        ))
        .unwrap(),
    )
    .unwrap();
    let start = Instant::now();
    let breaker = CircuitBreakerLayer::shared(CircuitConfig {
        jitter: 0.0,
        open_duration: Duration::from_secs(5),
        backoff_multiplier: 1.0,
        ..CircuitConfig::default()
    })
    .unwrap();
    let health = breaker.handle();
    let mut events = health.subscribe();
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let recorder = tokio::spawn({
        let transitions = transitions.clone();
        async move {
            while let Ok(event) = events.recv().await {
                transitions
                    .lock()
                    .unwrap()
                    .push((start.elapsed(), event.to));
            }
        }
    });

    // The stand-in: a smaller local model, say.
    let local = service_fn(|_: Request<Full<Bytes>>| async {
        let answer =
            r#"{"choices":[{"message":{"role":"assistant","content":"(local model) Hello."}}]}"#;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            answer.as_bytes(),
        ))))
    });
    // Every call that reaches the upstream is checked against the breaker, as it is made.
    let while_open = Arc::new(AtomicUsize::new(0));
    let spy = {
        let (health, while_open) = (health.clone(), while_open.clone());
        move |request: Request<_>| {
            if health.state(&Scope::new(Provider::OpenAi)) == CircuitState::Open {
                while_open.fetch_add(1, Ordering::SeqCst);
            }
            request
        }
    };
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(FallbackLayer::new(local))
        .layer(breaker)
        .layer(
            TimeoutLayer::new(TimeoutConfig {
                first_byte: Some(Duration::from_secs(2)),
                ..TimeoutConfig::default()
            })
            .unwrap(),
        )
        .layer(ClassifyLayer::new())
        .map_request(spy)
        .service(sim.clone());

    let calls = Arc::new(Mutex::new(Vec::new()));
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (stack, calls) = (stack.clone(), calls.clone());
            tokio::spawn(async move {
                // Staggered, then one call every 250 ms (plus however long it takes).
                tokio::time::sleep(Duration::from_millis(60 * i as u64)).await;
                while start.elapsed() < RUN {
                    let sent = start.elapsed();
                    let request = Request::post("https://api.openai.com/v1/chat/completions")
                        .header("authorization", "Bearer sk-outage")
                        .body(Full::new(Bytes::from_static(
                            br#"{"model":"gpt-4o-mini","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
                        )))
                        .unwrap();
                    let response = stack
                        .clone()
                        .oneshot(request)
                        .await
                        .unwrap_or_else(|e| panic!("no answer at {sent:?}: {e}"));
                    assert_eq!(response.status(), 200, "at {sent:?}");
                    let degraded = response.extensions().get::<Degraded>().cloned();
                    let header = response.headers().get(DEGRADED_HEADER).cloned();
                    assert_eq!(
                        header.as_ref().map(|h| h.to_str().unwrap().to_owned()),
                        degraded.as_ref().map(|d| d.trigger.as_str().to_owned()),
                        "extension and header agree"
                    );
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    assert!(!body.is_empty(), "an answer at {sent:?}");
                    calls.lock().unwrap().push(Call {
                        sent,
                        trigger: degraded.map(|d| d.trigger),
                    });
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    tokio::task::yield_now().await;
    recorder.abort();

    let upstream_during_outage = sim
        .log()
        .iter()
        .filter(|e| e.at >= OUTAGE_START && e.at < OUTAGE_END)
        .count();
    let calls = std::mem::take(&mut *calls.lock().unwrap());
    let transitions = transitions.lock().unwrap().clone();
    Outage {
        calls,
        while_open: while_open.load(Ordering::SeqCst),
        upstream_during_outage,
        transitions,
    }
}

fn check(run: &Outage, down_trigger: Trigger) {
    let during: Vec<&Call> = run
        .calls
        .iter()
        .filter(|c| c.sent >= OUTAGE_START && c.sent < OUTAGE_END)
        .collect();
    let open_refusals = during
        .iter()
        .filter(|c| c.trigger == Some(Trigger::CircuitOpen))
        .count();
    let opens = run
        .transitions
        .iter()
        .filter(|(_, to)| *to == CircuitState::Open)
        .count();
    let closed_again = run
        .transitions
        .iter()
        .filter(|(at, to)| *to == CircuitState::Closed && *at >= OUTAGE_END)
        .map(|(at, _)| *at)
        .next()
        .expect("the circuit closes after the outage");
    println!(
        "{} calls in all, {} during the outage: {} answered by the fallback for an open circuit, \
         {} after a {down_trigger} from the upstream; {} upstream calls during the outage, \
         {} while open; {opens} open periods; closed again at {:.2} s",
        run.calls.len(),
        during.len(),
        open_refusals,
        during
            .iter()
            .filter(|c| c.trigger == Some(down_trigger))
            .count(),
        run.upstream_during_outage,
        run.while_open,
        closed_again.as_secs_f64(),
    );
    assert!(during.len() > 100, "{}", during.len());
    // Every caller got an answer (checked as they came), each marked degraded.
    for call in &during {
        assert!(
            matches!(call.trigger, Some(t) if t == Trigger::CircuitOpen || t == down_trigger),
            "{call:?}"
        );
    }
    assert!(
        open_refusals > during.len() / 2,
        "mostly answered without an upstream call"
    );
    assert!(opens >= 4, "{:?}", run.transitions);
    // No call reached the upstream while the breaker was open.
    assert_eq!(run.while_open, 0);
    // Before the outage and once the circuit has closed again: the upstream's own answers.
    for call in &run.calls {
        if call.sent < OUTAGE_START || call.sent >= closed_again {
            assert_eq!(call.trigger, None, "{call:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_upstream_is_answered_by_the_fallback() {
    let run = outage("overload_rate = 1.0\noverload_status = 529").await;
    check(&run, Trigger::Overloaded);
}

#[tokio::test(start_paused = true)]
async fn a_hung_upstream_is_answered_by_the_fallback_after_the_first_byte_limit() {
    let run = outage("hang_rate = 1.0").await;
    check(&run, Trigger::Timeout);
}
