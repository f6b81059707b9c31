//! How many small requests per second the simulator serves on one core.
//!
//! `cargo bench -p tollgate-sim --bench throughput [-- SECONDS CONNECTIONS]`
//!
//! The simulator runs on a single-threaded runtime on its own thread (one core); the load
//! comes from a second thread over loopback HTTP/1.1 with keep-alive. Zero latency is
//! configured, so the figure is the simulator's own cost per request plus the HTTP stack's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate_sim::{Sim, SimConfig};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let seconds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let connections: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);

    let config = SimConfig::from_toml(
        "log_capacity = 0\n[output]\nmin_tokens = 16\nmax_tokens = 16\n[limits]\nrequests_per_minute = 100000000\ntokens_per_minute = 100000000000\n",
    )
    .unwrap();
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::Builder::new()
        .name("sim-server".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let sim = Sim::start(config).await.unwrap();
                url_tx.send((sim.url(), sim.service().clone())).unwrap();
                let _ = stop_rx.await;
                sim.shutdown().await;
            });
        })
        .unwrap();
    let (url, service) = url_rx.recv().unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let body = Bytes::from_static(br#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Say hi."}]}"#);
    let elapsed = runtime.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .build_http();
        let mut tasks = Vec::new();
        let warm_up = Duration::from_millis(500);
        let started = Instant::now();
        for _ in 0..connections {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let request = http::Request::post(format!("{url}/v1/chat/completions"))
                        .header("authorization", "Bearer sk-bench")
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .unwrap();
                    match client.request(request).await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.into_body().collect().await;
                            if started.elapsed() > warm_up {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(warm_up + Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let measured = started.elapsed() - warm_up;
        for task in tasks {
            let _ = task.await;
        }
        measured
    });
    let _ = stop_tx.send(());
    server.join().unwrap();

    println!(
        "tollgate-sim in-process: {:.0} requests/s on one thread, no network",
        in_process_rate()
    );
    let served = done.load(Ordering::Relaxed);
    let rate = served as f64 / elapsed.as_secs_f64();
    let stats = service.stats();
    println!(
        "tollgate-sim throughput: {rate:.0} requests/s on one server thread ({served} in {:.1} s, {connections} connections, {} failed, {} received)",
        elapsed.as_secs_f64(),
        failed.load(Ordering::Relaxed),
        stats.received,
    );
}

/// The simulator's own cost per request, without the network: in-process calls, serially.
fn in_process_rate() -> f64 {
    use tower::ServiceExt as _;
    let config = SimConfig::from_toml(
        "log_capacity = 0\n[output]\nmin_tokens = 16\nmax_tokens = 16\n[limits]\nrequests_per_minute = 100000000\ntokens_per_minute = 100000000000\n",
    )
    .unwrap();
    let service = tollgate_sim::SimService::new(config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = Bytes::from_static(br#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Say hi."}]}"#);
    runtime.block_on(async {
        let count = 50_000;
        let started = Instant::now();
        for _ in 0..count {
            let request = http::Request::post("/v1/chat/completions")
                .header("authorization", "Bearer sk-bench")
                .body(Full::new(body.clone()))
                .unwrap();
            let response = service.clone().oneshot(request).await.unwrap();
            let _ = response.into_body().collect().await;
        }
        count as f64 / started.elapsed().as_secs_f64()
    })
}
