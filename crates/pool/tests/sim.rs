//! The pool against tollgate-sim: three keys of 200 requests a minute each and 600 a minute
//! offered. The pool uses at least 95 % of the pooled limit with at most 1 % 429s; with one
//! key revoked mid-run, every request is still answered by the other two; and nothing the
//! run logs (at TRACE) contains a key. In-process simulator, paused time.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, Provider, Secret};
use tollgate_pool::{Member, Pool, PoolHandle, Served};
use tollgate_ratelimit::{Quotas, RateLimitLayer};
use tollgate_sim::{SimConfig, SimService};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

const KEYS: [&str; 3] = [
    "sk-pool-alpha-1111",
    "sk-pool-bravo-2222",
    "sk-pool-charlie-3333",
];
const RPM: u64 = 200;
const OFFERED_PER_MINUTE: u64 = 600;
const REQUESTS: usize = 3_000;

/// Every log line of the run.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sim(revoke: Option<&str>) -> SimService {
    let mut toml = String::from(
        "seed = 12\n[latency]\ntime_to_first_token = \"150ms\"\nper_output_token = \"1ms\"\n\
         [output]\nmin_tokens = 8\nmax_tokens = 8\n",
    );
    for key in KEYS {
        toml.push_str(&format!(
            "[[keys]]\nkey = \"{key}\"\nrequests_per_minute = {RPM}\ntokens_per_minute = 10000000\n"
        ));
        if revoke == Some(key) {
            toml.push_str("revoked_after = \"2m\"\n");
        }
    }
    SimService::new(SimConfig::from_toml(&toml).unwrap()).unwrap()
}

type Member_ = BoxCloneSyncService<
    Request<Full<Bytes>>,
    http::Response<tollgate_core::body::ObservedBody<tollgate_sim::SimBody>>,
    BoxError,
>;

/// Each key's own stack: its rate limiter (200 a minute), classify, the simulator.
fn pool(sim: &SimService) -> (Pool<Member_>, PoolHandle) {
    let mut builder = Pool::builder();
    for (i, key) in KEYS.iter().enumerate() {
        let stack = ServiceBuilder::new()
            .layer(
                RateLimitLayer::new(Quotas::per_minute(RPM, 10_000_000))
                    .with_per_model_limits(false),
            )
            .layer(ClassifyLayer::new())
            .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
            .service(sim.clone());
        builder = builder.member(
            Member::key(&format!("key-{i}"), Secret::new(*key)),
            BoxCloneSyncService::new(stack),
        );
    }
    let pool = builder.build();
    let handle = pool.handle();
    (pool, handle)
}

struct Run {
    answered: usize,
    failed: Vec<String>,
    elapsed: Duration,
    by_member: [usize; 3],
}

/// Offers `REQUESTS` requests at 600 a minute, open loop; waits for every answer.
async fn offer(sim: &SimService) -> (Run, PoolHandle) {
    let (pool, handle) = pool(sim);
    let stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
            .service(pool),
    );
    let start = Instant::now();
    let gap = Duration::from_secs(60) / OFFERED_PER_MINUTE as u32;
    let mut tasks = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        tokio::time::sleep_until(start + gap * i as u32).await;
        let stack = stack.clone();
        tasks.push(tokio::spawn(async move {
            let request = Request::post("https://api.openai.com/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(format!(
                    r#"{{"model":"gpt-4o-mini","max_tokens":8,"messages":[{{"role":"user","content":"q{i}"}}]}}"#
                ))))
                .unwrap();
            let response = stack.oneshot(request).await?;
            let status = response.status();
            let member = response.extensions().get::<Served>().map(|s| s.member.clone());
            response.into_body().collect().await?;
            Ok::<_, BoxError>((status, member))
        }));
    }
    let mut run = Run {
        answered: 0,
        failed: Vec::new(),
        elapsed: Duration::ZERO,
        by_member: [0; 3],
    };
    for task in tasks {
        match task.await.unwrap() {
            Ok((status, member)) if status.is_success() => {
                run.answered += 1;
                if let Some(member) = member {
                    let i: usize = member.trim_start_matches("key-").parse().unwrap();
                    run.by_member[i] += 1;
                }
            }
            Ok((status, _)) => run.failed.push(status.to_string()),
            Err(error) => run.failed.push(error.to_string()),
        }
    }
    run.elapsed = start.elapsed();
    (run, handle)
}

#[tokio::test(start_paused = true)]
async fn three_keys_serve_their_pooled_limit() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = sim(None);
    let (run, handle) = offer(&sim).await;
    let log = sim.log();
    let limited = log.iter().filter(|e| e.status == 429).count();
    let minutes = run.elapsed.as_secs_f64() / 60.0;
    let pooled = (RPM * 3) as f64 * minutes;
    let used = run.answered as f64 / pooled;
    println!(
        "{} answered in {:.2} min: {:.1} % of the pooled limit; {limited} 429s of {} calls; by key {:?}",
        run.answered,
        minutes,
        used * 100.0,
        log.len(),
        run.by_member
    );
    assert!(
        run.failed.is_empty(),
        "{:?}",
        &run.failed[..run.failed.len().min(5)]
    );
    assert!(used >= 0.95, "{:.1} % of the pooled limit", used * 100.0);
    assert!(limited as f64 <= log.len() as f64 * 0.01, "{limited} 429s");

    // Nothing logged, nothing reported, carries a key.
    tracing::info!(pool = ?handle.snapshot(), "final report");
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!logged.is_empty(), "the run logged");
    for key in KEYS {
        assert!(!logged.contains(key), "a key in the logs");
        assert!(!format!("{:?}", handle.snapshot()).contains(key));
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_revoked_mid_run_fails_no_request_the_others_can_serve() {
    let sim = sim(Some(KEYS[1]));
    let (run, handle) = offer(&sim).await;
    let revoked = sim.log().iter().filter(|e| e.status == 401).count();
    let report = handle.snapshot();
    println!(
        "{} answered in {:.2} min; the revoked key answered 401 {revoked} times; by key {:?}; {:?}",
        run.answered,
        run.elapsed.as_secs_f64() / 60.0,
        run.by_member,
        report[1].state
    );
    assert!(
        run.failed.is_empty(),
        "{} failed: {:?}",
        run.failed.len(),
        &run.failed[..run.failed.len().min(5)]
    );
    assert_eq!(run.answered, REQUESTS);
    assert!(
        (1..=3).contains(&revoked),
        "the revoked key was parked at once: {revoked} 401s"
    );
    assert!(matches!(
        report[1].state,
        tollgate_pool::MemberState::CoolingDown {
            reason: tollgate_pool::Reason::AuthError,
            ..
        }
    ));
}
