//! The cache never grows without bound: 100,000 distinct answers stored one after another stay
//! within `max_bytes` (and, for small ones, within `max_entries`), the least recently used
//! going first.

use std::convert::Infallible;
use std::sync::LazyLock;

use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinSet;
use tollgate_cache::{CacheConfig, CacheHandle, CacheLayer, CacheStatus};
use tollgate_core::{EndpointKind, LlmRequest, Provider};
use tower::{Layer, Service, ServiceExt, service_fn};

/// An embeddings request for input `i`, annotated as `AnnotateLayer` would.
fn embed(i: usize) -> Request<Full<Bytes>> {
    static URI: LazyLock<Uri> =
        LazyLock::new(|| Uri::from_static("https://api.openai.com/v1/embeddings"));
    let body = format!(r#"{{"model":"e","input":"document {i}"}}"#);
    let mut request = Request::new(Full::new(Bytes::from(body)));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = URI.clone();
    let llm = LlmRequest::new(Provider::OpenAi, EndpointKind::Embeddings);
    request.extensions_mut().insert(llm);
    request
}

/// An upstream that answers at once with `size` bytes.
fn upstream(
    size: usize,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let body = Bytes::from(vec![b'x'; size]);
    service_fn(move |_: Request<Full<Bytes>>| {
        let body = body.clone();
        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
    })
}

/// Callers storing answers side by side.
const CALLERS: usize = 4;
/// Answers stored between two checks of the bounds.
const ROUND: usize = 1_000;

/// Stores `count` distinct answers of `size` bytes, a thousand at a time from a few callers at
/// once; after each thousand the cache's accounts must be within `config`, and while they are
/// stored never far above it. Returns the handle.
async fn fill(config: CacheConfig, count: usize, size: usize) -> CacheHandle {
    let layer = CacheLayer::new(config.clone()).unwrap();
    let handle = layer.handle();
    let cache = layer.layer(upstream(size));
    let mut peak = 0;
    for round in (0..count).step_by(ROUND) {
        let mut callers = JoinSet::new();
        for caller in 0..CALLERS {
            let (mut cache, handle) = (cache.clone(), handle.clone());
            let inputs = (round + caller..count.min(round + ROUND)).step_by(CALLERS);
            callers.spawn(async move {
                let mut peak = 0;
                for i in inputs {
                    let response = cache.ready().await.unwrap().call(embed(i)).await.unwrap();
                    assert_eq!(response.extensions().get(), Some(&CacheStatus::Miss));
                    response.into_body().collect().await.unwrap();
                    peak = peak.max(handle.snapshot().bytes);
                }
                peak
            });
        }
        peak = callers.join_all().await.into_iter().fold(peak, u64::max);
        handle.run_pending_tasks();
        let stats = handle.snapshot();
        assert!(stats.bytes <= config.max_bytes, "{round}: {stats:?}");
        assert!(stats.entries <= config.max_entries, "{round}: {stats:?}");
    }
    println!(
        "{count} inserts of {size} bytes: peak {peak} bytes before pending evictions ran, {:?}",
        handle.snapshot()
    );
    // Between the amortised eviction batches the cache may hold a little more, never much.
    assert!(
        peak <= config.max_bytes + config.max_bytes / 2,
        "peak {peak}"
    );
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_distinct_answers_stay_within_the_byte_bound() {
    let config = CacheConfig {
        max_entries: 1_000_000,
        max_bytes: 1024 * 1024,
        ..CacheConfig::default()
    };
    let handle = fill(config.clone(), 100_000, 500).await;
    let stats = handle.snapshot();
    assert_eq!(stats.stored, 100_000);
    assert!(
        stats.bytes > config.max_bytes * 9 / 10,
        "it fills up: {stats:?}"
    );
    assert!(stats.evictions > 90_000, "{stats:?}");
    assert_eq!(stats.evictions + stats.entries, 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_answers_stay_within_the_entry_bound() {
    let config = CacheConfig {
        max_entries: 100,
        max_bytes: 64 * 1024 * 1024,
        ..CacheConfig::default()
    };
    let stats = fill(config, 5_000, 10).await.snapshot();
    assert!(stats.entries <= 100 && stats.entries >= 90, "{stats:?}");
}

#[tokio::test]
async fn the_least_recently_used_goes_first() {
    let config = CacheConfig {
        max_entries: 10,
        max_bytes: 1024 * 1024,
        ..CacheConfig::default()
    };
    let layer = CacheLayer::new(config).unwrap();
    let handle = layer.handle();
    let mut cache = layer.layer(upstream(10));
    let mut status = async |i| {
        let response = cache.ready().await.unwrap().call(embed(i)).await.unwrap();
        let status = *response.extensions().get::<CacheStatus>().unwrap();
        response.into_body().collect().await.unwrap();
        handle.run_pending_tasks();
        status
    };
    for i in 0..10 {
        status(i).await;
    }
    // 0 is used again; 10 pushes out the least recently used, 1.
    assert_eq!(status(0).await, CacheStatus::Hit);
    assert_eq!(status(10).await, CacheStatus::Miss);
    assert_eq!(status(0).await, CacheStatus::Hit);
    assert_eq!(status(1).await, CacheStatus::Miss);
}
