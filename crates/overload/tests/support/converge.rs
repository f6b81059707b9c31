//! The convergence run shared by the `sim` test and the `limit_plot` example: 64 callers
//! against tollgate-sim with a hidden capacity of 8 calls in flight (529 beyond), through
//! annotate → overload → classify, in paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::Overloaded;
use tollgate_overload::OverloadLayer;
use tollgate_sim::{SimConfig, SimService};
use tower::{ServiceBuilder, ServiceExt};

/// The hidden capacity.
pub(crate) const CAPACITY: usize = 8;
/// One call at the sim: 200 ms to the first token, then 20 tokens at 10 ms.
pub(crate) const CALL: Duration = Duration::from_millis(400);
/// Callers sending at once.
pub(crate) const CALLERS: usize = 64;

/// What a run saw.
pub(crate) struct Run {
    /// (seconds since the start, the limit then), every 250 ms.
    pub(crate) limits: Vec<(f64, usize)>,
    /// Calls that reached the simulator.
    pub(crate) upstream: u64,
    /// Of them, answered 529.
    pub(crate) overloaded: u64,
    /// Successful calls per second, from `settle` to the end.
    pub(crate) goodput: f64,
    /// Requests the throttle shed before they were sent.
    pub(crate) shed_locally: u64,
    /// The most successful calls per second the capacity allows: capacity / [`CALL`].
    pub(crate) ideal: f64,
}

fn sim() -> SimService {
    SimService::new(
        SimConfig::from_toml(
            r#"
            seed = 8
            [latency]
            time_to_first_token = "200ms"
            per_output_token = "10ms"
            [output]
            min_tokens = 20
            max_tokens = 20
            [faults]
            capacity = 8
            overload_status = 529
        "#,
        )
        .expect("a valid sim config"),
    )
    .expect("a sim")
}

/// Runs `CALLERS` closed-loop callers for `length`; goodput is counted after `settle`.
pub(crate) async fn run(layer: OverloadLayer, length: Duration, settle: Duration) -> Run {
    let sim = sim();
    let handle = layer.handle();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(sim.clone());
    let start = Instant::now();
    let successes = Arc::new(AtomicU64::new(0));
    let shed = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let stack = stack.clone();
            let successes = successes.clone();
            let shed = shed.clone();
            tokio::spawn(async move {
                while start.elapsed() < length {
                    let request = http::Request::post("https://api.openai.com/v1/chat/completions")
                        .header("authorization", "Bearer sk-converge")
                        .body(Full::new(Bytes::from_static(
                            br#"{"model":"gpt-4o-mini","max_tokens":20,"messages":[{"role":"user","content":"ping"}]}"#,
                        )))
                        .expect("a request");
                    match stack.clone().oneshot(request).await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            response.into_body().collect().await.expect("a body");
                            // Goodput counts the calls done between `settle` and the end.
                            if ok && (settle..length).contains(&start.elapsed()) {
                                successes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(error) if error.is::<Overloaded>() => {
                            shed.fetch_add(1, Ordering::Relaxed);
                            // A shed caller backs off as a client would.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(error) => panic!("unexpected error: {error}"),
                    }
                }
            })
        })
        .collect();
    let mut limits = Vec::new();
    while start.elapsed() < length {
        let limit = handle.snapshot().first().map_or(0, |s| s.limit);
        limits.push((start.elapsed().as_secs_f64(), limit));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for caller in callers {
        caller.await.expect("a caller");
    }
    let log = sim.log();
    let upstream = log.len() as u64;
    let overloaded = log.iter().filter(|e| e.status == 529).count() as u64;
    Run {
        ideal: CAPACITY as f64 / CALL.as_secs_f64(),
        limits,
        upstream,
        overloaded,
        goodput: successes.load(Ordering::Relaxed) as f64 / (length - settle).as_secs_f64(),
        shed_locally: shed.load(Ordering::Relaxed),
    }
}
