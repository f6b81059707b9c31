//! The retry layer against tollgate-sim, in-process under paused time: a flaky provider, a
//! hard-down one, and streams that break after their first bytes.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_retry::{Retried, RetryLayer};
use tollgate_sim::{Rejection, SimConfig, SimService};
use tower::{ServiceBuilder, ServiceExt};

fn sim(toml: &str) -> SimService {
    SimService::new(SimConfig::from_toml(toml).unwrap()).unwrap()
}

fn chat(stream: bool) -> http::Request<Full<Bytes>> {
    let body = if stream {
        r#"{"model":"gpt-4o-mini","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#
    } else {
        r#"{"model":"gpt-4o-mini","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#
    };
    http::Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-retry")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_flaky_provider_every_request_succeeds_within_five_attempts() {
    let sim = sim("seed = 20\n[faults]\nerror_rate = 0.2\n");
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(RetryLayer::patient().with_seed(20))
        .layer(ClassifyLayer::new())
        .service(sim.clone());
    let mut attempts = [0usize; 6];
    for _ in 0..1_000 {
        let response = stack.clone().oneshot(chat(false)).await.unwrap();
        assert_eq!(response.status(), 200, "every request ends in success");
        let retried = response.extensions().get::<Retried>().copied().unwrap();
        attempts[retried.attempts as usize] += 1;
        response.into_body().collect().await.unwrap();
    }
    let stats = sim.stats();
    println!(
        "1,000 requests at a 20 % error rate: attempts needed {:?} (index = attempts); upstream saw {} calls, {} 500s",
        &attempts[1..],
        stats.received,
        stats.rejected(Rejection::ServerError)
    );
    assert_eq!(stats.accepted, 1_000);
    assert_eq!(attempts[1..].iter().sum::<usize>(), 1_000);
}

#[tokio::test(start_paused = true)]
async fn a_hard_down_provider_gets_at_most_the_budget() {
    let sim = sim("[faults]\nerror_rate = 1.0\n");
    let (ratio, min_per_second) = (0.2, 10);
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(
            RetryLayer::patient()
                .with_seed(1)
                .with_budget(ratio, 1_000, min_per_second),
        )
        .layer(ClassifyLayer::new())
        .service(sim.clone());
    let requests = 1_000;
    let start = Instant::now();
    // Everyone at once, as when an outage starts under load.
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let stack = stack.clone();
            tokio::spawn(async move {
                let response = stack.oneshot(chat(false)).await.unwrap();
                assert_eq!(response.status(), 500, "the last outcome is handed back");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let calls = sim.stats().received as f64;
    let floor = f64::from(min_per_second) * (elapsed + 1.0);
    let bound = f64::from(requests) * (1.0 + ratio) + floor;
    println!(
        "hard down: {requests} requests made {calls} calls in {elapsed:.1} s; bound {bound:.0} = requests × (1 + {ratio}) + \
         {min_per_second}/s floor × (elapsed + 1 s burst)"
    );
    assert!(calls <= bound, "{calls} > {bound}");
    assert!(
        calls >= f64::from(requests) * (1.0 + ratio),
        "the budget's retries were used"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_breaks_after_its_first_bytes_is_not_replayed() {
    for faults in ["stream_disconnect_rate = 1.0", "stream_error_rate = 1.0"] {
        let sim = sim(&format!(
            "[faults]\n{faults}\n[output]\nmin_tokens = 20\nmax_tokens = 20\n"
        ));
        let stack = ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(RetryLayer::new().with_seed(2))
            .layer(ClassifyLayer::new())
            .service(sim.clone());
        let response = stack.oneshot(chat(true)).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await;
        match faults {
            f if f.starts_with("stream_disconnect") => {
                assert!(body.is_err(), "the caller sees the break")
            }
            _ => {
                let text = body.unwrap().to_bytes();
                assert!(
                    String::from_utf8_lossy(&text).contains("\"error\""),
                    "the caller sees the error event"
                );
            }
        }
        assert_eq!(
            sim.stats().received,
            1,
            "{faults}: never replayed once bytes reached the caller"
        );
    }
}
