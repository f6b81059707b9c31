//! The stack under test: Annotate → Cache → Classify → the simulator, in-process.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::Request;
use http::response::Parts;
use http_body_util::{BodyExt, Full};
use tollgate_cache::{CacheBody, CacheConfig, CacheHandle, CacheLayer, CachePolicy, CacheStatus};
use tollgate_core::BoxError;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_sim::{SimBody, SimConfig, SimService};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

pub type Stack = BoxCloneSyncService<Request<Full<Bytes>>, http::Response<Body>, BoxError>;
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A simulator running `toml` (an empty string: a healthy, instant one).
pub fn sim(toml: &str) -> SimService {
    SimService::new(SimConfig::from_toml(toml).expect("a valid scenario")).expect("a valid config")
}

/// `cache` over `sim`, as the standard stack has it.
pub fn stack<P: CachePolicy>(cache: CacheLayer<P>, sim: &SimService) -> Stack {
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(cache)
        .layer(ClassifyLayer::new())
        .service(sim.clone());
    let service = ServiceExt::<Request<Full<Bytes>>>::map_response(
        service,
        |response: http::Response<CacheBody<ObservedBody<SimBody>>>| {
            response.map(BodyExt::boxed_unsync)
        },
    );
    BoxCloneSyncService::new(service)
}

/// A cache with the default bounds over `sim`, and its handle.
pub fn cached(sim: &SimService) -> (Stack, CacheHandle) {
    cached_with(CacheConfig::default(), sim)
}

pub fn cached_with(config: CacheConfig, sim: &SimService) -> (Stack, CacheHandle) {
    let layer = CacheLayer::new(config).unwrap();
    let handle = layer.handle();
    (stack(layer, sim), handle)
}

/// A POST of `body` to `path` with the key `key`.
pub fn post(path: &str, key: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(format!("https://api.openai.com{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// A chat completion at temperature 0 asking `prompt`.
pub fn chat(key: &str, prompt: &str) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","temperature":0,"max_tokens":16,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    );
    post("/v1/chat/completions", key, &body)
}

/// The same, streamed.
pub fn chat_stream(key: &str, prompt: &str) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","temperature":0,"stream":true,"max_tokens":16,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    );
    post("/v1/chat/completions", key, &body)
}

/// What came back: the head, the status the cache reported, and the body frame by frame.
#[derive(Debug)]
pub struct Reply {
    pub head: Parts,
    pub cache: CacheStatus,
    pub frames: Vec<Bytes>,
    /// The error the body ended with, if it did.
    pub error: Option<BoxError>,
}

impl Reply {
    pub fn bytes(&self) -> Vec<u8> {
        self.frames.concat()
    }

    pub fn marker(&self) -> Option<&str> {
        self.head
            .headers
            .get("x-tollgate-cache")
            .map(|v| v.to_str().unwrap())
    }
}

/// Sends `request` through `stack` and reads the whole body.
pub async fn send(stack: &Stack, request: Request<Full<Bytes>>) -> Reply {
    let response = stack.clone().oneshot(request).await.expect("a response");
    let (head, mut body) = response.into_parts();
    let cache = *head
        .extensions
        .get::<CacheStatus>()
        .expect("a cache status");
    let mut frames = Vec::new();
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => frames.extend(frame.into_data().ok()),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    Reply {
        head,
        cache,
        frames,
        error,
    }
}

/// How the cache answered `request` (whose body is read to its end).
pub async fn status(stack: &Stack, request: Request<Full<Bytes>>) -> CacheStatus {
    send(stack, request).await.cache
}

/// Upstream calls the simulator received.
pub fn calls(sim: &SimService) -> usize {
    sim.log().len()
}

/// `request` as `AnnotateLayer` passes it on (with its `LlmRequest`).
pub async fn annotate(request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    use tower::Layer;
    let capture = tower::service_fn(|request: Request<Full<Bytes>>| async move {
        Ok::<_, std::convert::Infallible>(request)
    });
    let annotate = AnnotateLayer::new().layer(capture);
    annotate.oneshot(request).await.unwrap()
}
