//! The breaker against tollgate-sim scripted healthy 20 s → overloaded 30 s (every request a
//! 529) → healthy: during the
//! outage at most (threshold + probes per open period) requests reach the simulator, and after
//! recovery the circuit closes within one open period. In-process simulator, paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig, CircuitState};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::CircuitOpen;
use tollgate_sim::{SimConfig, SimService};
use tower::{ServiceBuilder, ServiceExt};

const OUTAGE_START: Duration = Duration::from_secs(20);
const OUTAGE_END: Duration = Duration::from_secs(50);

struct Run {
    /// Requests that reached the simulator while it was down.
    during_outage: usize,
    /// Every transition, with when it happened.
    transitions: Vec<(Duration, CircuitState, CircuitState)>,
    refused: usize,
}

async fn run(config: CircuitConfig) -> Run {
    let sim = SimService::new(
        SimConfig::from_toml(
            r#"
            [latency]
            time_to_first_token = "50ms"
            [[phases]]
            name = "healthy"
            duration = "20s"
            [[phases]]
            name = "overloaded"
            duration = "30s"
            [phases.faults]
            overload_rate = 1.0
            overload_status = 529
            [[phases]]
            name = "healthy again"
            duration = "120s"
        "#,
        )
        .unwrap(),
    )
    .unwrap();
    let breaker = CircuitBreakerLayer::new(config).unwrap();
    let mut events = breaker.handle().subscribe();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(breaker)
        .layer(ClassifyLayer::new())
        .service(sim.clone());

    let start = Instant::now();
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let recorder = tokio::spawn({
        let transitions = transitions.clone();
        async move {
            while let Ok(event) = events.recv().await {
                transitions
                    .lock()
                    .unwrap()
                    .push((start.elapsed(), event.from, event.to));
            }
        }
    });
    let mut refused = 0;
    // A steady caller: one request every 200 ms for two minutes.
    while start.elapsed() < Duration::from_secs(120) {
        let request = http::Request::post("https://api.openai.com/v1/chat/completions")
            .header("authorization", "Bearer sk-circuit")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"gpt-4o-mini","max_tokens":8,"messages":[{"role":"user","content":"ping"}]}"#,
            )))
            .unwrap();
        match stack.clone().oneshot(request).await {
            Ok(response) => {
                response.into_body().collect().await.unwrap();
            }
            Err(error) => {
                assert!(error.is::<CircuitOpen>(), "{error}");
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::yield_now().await;
    recorder.abort();
    let during_outage = sim
        .log()
        .iter()
        .filter(|e| e.at >= OUTAGE_START && e.at < OUTAGE_END)
        .count();
    let transitions = transitions.lock().unwrap().clone();
    Run {
        during_outage,
        transitions,
        refused,
    }
}

fn opens_during_outage(run: &Run) -> usize {
    run.transitions
        .iter()
        .filter(|(at, _, to)| *to == CircuitState::Open && *at >= OUTAGE_START && *at < OUTAGE_END)
        .count()
}

fn closed_after_recovery(run: &Run) -> Duration {
    run.transitions
        .iter()
        .find(|(at, _, to)| *to == CircuitState::Closed && *at >= OUTAGE_END)
        .map(|(at, _, _)| *at)
        .expect("the circuit closes after recovery")
}

#[tokio::test(start_paused = true)]
async fn an_outage_costs_the_threshold_and_a_few_probes() {
    let config = CircuitConfig {
        jitter: 0.0,
        ..CircuitConfig::default()
    };
    let run = run(config.clone()).await;
    let opens = opens_during_outage(&run);
    let allowed = 5 + 3 * opens;
    let closed_at = closed_after_recovery(&run);
    println!(
        "outage 20 s–50 s: {} requests reached the simulator (allowed {allowed}: 5 to trip, 3 probes per open period, {opens} periods), \
         {} refused by the breaker; closed again at {:.1} s; transitions: {:?}",
        run.during_outage,
        run.refused,
        closed_at.as_secs_f64(),
        run.transitions
    );
    assert!(opens >= 1);
    assert!(
        run.during_outage <= allowed,
        "{} > {allowed}",
        run.during_outage
    );
    assert!(
        closed_at <= OUTAGE_END + config.open_duration,
        "closed at {closed_at:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn with_jitter_and_a_short_open_period_too() {
    // Several open periods inside the outage: each costs at most its probes.
    let config = CircuitConfig {
        open_duration: Duration::from_secs(5),
        backoff_multiplier: 1.0,
        ..CircuitConfig::default()
    };
    let run = run(config.clone()).await;
    let opens = opens_during_outage(&run);
    let allowed = 5 + 3 * opens;
    println!(
        "short periods: {} reached the simulator during the outage, {opens} open periods, allowed {allowed}",
        run.during_outage
    );
    assert!(opens >= 4, "{:?}", run.transitions);
    assert!(
        run.during_outage <= allowed,
        "{} > {allowed}",
        run.during_outage
    );
    let closed_at = closed_after_recovery(&run);
    assert!(
        closed_at
            <= OUTAGE_END
                + config.open_duration.mul_f64(1.0 + config.jitter)
                + Duration::from_secs(1),
        "{closed_at:?}"
    );
}
