//! The batcher's worker: groups requests by key, flushes a group when it is full or its
//! oldest member has waited long enough, and sends each flush as one upstream call.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Request, Response, request, response};
use http_body_util::{BodyExt, Full};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tollgate_core::{BoxError, Deadline, EndpointKind, LlmRequest};
use tower::{Service, ServiceExt};

use crate::codec::{BatchCodec, Part, Weight};
use crate::error::BatchFailed;
use crate::group_key::GroupKey;
use crate::layer::BatchLayer;
use crate::metrics;

/// What a member gets back.
pub(crate) type Reply = Result<Response<Full<Bytes>>, BoxError>;

/// One request waiting in the batcher.
pub(crate) struct Item<C: BatchCodec> {
    pub(crate) key: GroupKey<C::Key>,
    pub(crate) weight: Weight,
    pub(crate) member: C::Member,
    pub(crate) head: request::Parts,
    pub(crate) body: Bytes,
    pub(crate) reply: oneshot::Sender<Reply>,
    /// Its place in the queue, given back at the flush.
    pub(crate) slot: Option<OwnedSemaphorePermit>,
    pub(crate) queued_at: Instant,
}

struct Group<C: BatchCodec> {
    items: Vec<Item<C>>,
    weight: Weight,
    /// The most items this group may hold (the size signal, read when it opened).
    max_items: u32,
    flush_at: Instant,
}

pub(crate) struct Worker<S, C: BatchCodec> {
    inner: S,
    layer: BatchLayer<C>,
    rx: mpsc::UnboundedReceiver<Item<C>>,
    groups: HashMap<GroupKey<C::Key>, Group<C>>,
}

impl<S, C: BatchCodec> Worker<S, C> {
    pub(crate) fn new(
        inner: S,
        layer: BatchLayer<C>,
        rx: mpsc::UnboundedReceiver<Item<C>>,
    ) -> Self {
        Self {
            inner,
            layer,
            rx,
            groups: HashMap::new(),
        }
    }
}

impl<S, C, RB> Worker<S, C>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
    C: BatchCodec,
{
    fn max_items(&self) -> u32 {
        self.layer
            .config
            .max_batch_size
            .min(self.layer.codec.max_items())
    }

    fn max_tokens(&self) -> u64 {
        let cap = self.layer.codec.max_tokens();
        self.layer.config.max_tokens.map_or(cap, |t| t.min(cap))
    }

    pub(crate) async fn run(mut self) {
        loop {
            let next = self.groups.values().map(|g| g.flush_at).min();
            tokio::select! {
                biased;
                item = self.rx.recv() => match item {
                    Some(item) => self.add(item),
                    None => break,
                },
                () = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.flush_due(Instant::now());
                }
            }
        }
        // Every sender is gone: send what is left.
        let keys: Vec<GroupKey<C::Key>> = self.groups.keys().cloned().collect();
        for key in keys {
            self.flush(&key);
        }
    }

    fn add(&mut self, item: Item<C>) {
        let max_tokens = self.max_tokens();
        let full = self.groups.get(&item.key).is_some_and(|group| {
            group.weight.items + item.weight.items > group.max_items
                || group.weight.tokens + item.weight.tokens > max_tokens
        });
        if full {
            self.flush(&item.key);
        }
        let key = item.key.clone();
        let group = match self.groups.get_mut(&key) {
            Some(group) => group,
            None => {
                let mut max_items = self.max_items();
                if let (Some(signal), Some(llm)) =
                    (&self.layer.signal, item.head.extensions.get::<LlmRequest>())
                {
                    max_items = signal(&llm.scope(), max_items).clamp(1, max_items);
                }
                self.groups.entry(key.clone()).or_insert(Group {
                    items: Vec::new(),
                    weight: Weight::default(),
                    max_items,
                    flush_at: item.queued_at + self.layer.config.max_wait,
                })
            }
        };
        group.weight.items += item.weight.items;
        group.weight.tokens += item.weight.tokens;
        group.items.push(item);
        if group.weight.items >= group.max_items || group.weight.tokens >= max_tokens {
            self.flush(&key);
        }
    }

    fn flush_due(&mut self, now: Instant) {
        let due: Vec<GroupKey<C::Key>> = self
            .groups
            .iter()
            .filter(|(_, g)| g.flush_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.flush(&key);
        }
    }

    fn flush(&mut self, key: &GroupKey<C::Key>) {
        let Some(group) = self.groups.remove(key) else {
            return;
        };
        // A member whose caller has gone is left out.
        let items: Vec<Item<C>> = group
            .items
            .into_iter()
            .filter(|item| !item.reply.is_closed())
            .map(|mut item| {
                item.slot = None;
                item
            })
            .collect();
        if items.is_empty() {
            return;
        }
        metrics::flushed(items[0].head.extensions.get::<LlmRequest>(), items.len());
        tracing::debug!(
            members = items.len(),
            items = group.weight.items,
            tokens = group.weight.tokens,
            "batch flushed"
        );
        let inner = self.inner.clone();
        let codec = self.layer.codec.clone();
        tokio::spawn(send(inner, codec, items));
    }
}

/// Sends one flush and answers its members.
async fn send<S, C, RB>(inner: S, codec: Arc<C>, mut items: Vec<Item<C>>)
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
    C: BatchCodec,
{
    if items.len() == 1 {
        // Alone: sent as it came.
        let item = items.pop().expect("one item");
        let _ = item.reply.send(alone(inner, item.head, item.body).await);
        return;
    }
    let again = inner.clone();
    let members: Vec<&C::Member> = items.iter().map(|i| &i.member).collect();
    let body = match codec.merge(&members) {
        Ok(body) => body,
        Err(error) => return fan_out(items, &BatchFailed::new(error)),
    };
    let mut head = merged_head(&items, body.len());
    if let Err(error) = codec.merged_head(&mut head) {
        return fan_out(items, &BatchFailed::new(error));
    }
    metrics::upstream_call(head.extensions.get::<LlmRequest>());
    let sent = inner
        .oneshot(Request::from_parts(head, Full::new(body)))
        .await
        .map_err(Into::into);
    let reply = match sent {
        Ok(response) => whole(response).await,
        Err(error) => Err(error),
    };
    let response = match reply {
        Ok(response) => response,
        Err(error) => return fan_out(items, &BatchFailed::new(error)),
    };
    let (parts, body) = response.into_parts();
    let bytes = tollgate_core::body::full_bytes(body);
    if !parts.status.is_success() {
        // The upstream refused the whole batch: every member gets its answer.
        for item in items {
            let _ = item.reply.send(Ok(rebuild(&parts, bytes.clone())));
        }
        return;
    }
    let members: Vec<&C::Member> = items.iter().map(|i| &i.member).collect();
    let shares = codec.split(&bytes, &members);
    let mut resend = Vec::new();
    for (item, share) in items.into_iter().zip(shares) {
        match share {
            Part::Body(body) => {
                let _ = item.reply.send(Ok(rebuild(&parts, body)));
            }
            Part::Failed(error) => {
                let _ = item.reply.send(Err(error));
            }
            Part::Resend => resend.push(item),
        }
    }
    if !resend.is_empty() {
        tracing::debug!(members = resend.len(), "batch members sent again alone");
    }
    for item in resend {
        let inner = again.clone();
        tokio::spawn(async move {
            if item.reply.is_closed() {
                return;
            }
            let _ = item.reply.send(alone(inner, item.head, item.body).await);
        });
    }
}

/// Sends one request as it came, reading its whole answer.
async fn alone<S, RB>(inner: S, head: request::Parts, body: Bytes) -> Reply
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: http_body::Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    metrics::upstream_call(head.extensions.get::<LlmRequest>());
    let sent = inner
        .oneshot(Request::from_parts(head, Full::new(body)))
        .await
        .map_err(Into::into);
    match sent {
        Ok(response) => whole(response).await,
        Err(error) => Err(error),
    }
}

fn fan_out<C: BatchCodec>(items: Vec<Item<C>>, error: &BatchFailed) {
    for item in items {
        let _ = item.reply.send(Err(Box::new(error.clone())));
    }
}

/// The first member's head, carrying the merged body: its LLM annotation counts every
/// member's inputs and tokens, and its deadline is the earliest of theirs.
fn merged_head<C: BatchCodec>(items: &[Item<C>], length: usize) -> request::Parts {
    let first = &items[0].head;
    let (mut head, ()) = Request::builder()
        .method(first.method.clone())
        .uri(first.uri.clone())
        .version(first.version)
        .body(())
        .expect("a valid head")
        .into_parts();
    head.headers = first.headers.clone();
    head.extensions = first.extensions.clone();
    head.headers
        .insert(CONTENT_LENGTH, HeaderValue::from(length as u64));
    let (inputs, tokens) = items.iter().fold((0u32, 0u64), |(i, t), item| {
        (i + item.weight.items, t + item.weight.tokens)
    });
    if let Some(llm) = head.extensions.get_mut::<LlmRequest>() {
        if llm.endpoint == EndpointKind::Embeddings {
            llm.embedding_inputs = Some(inputs);
        }
        llm.input_tokens_estimate = u32::try_from(tokens).unwrap_or(u32::MAX);
    }
    if let Some(deadline) = items
        .iter()
        .filter_map(|i| i.head.extensions.get::<Deadline>())
        .min_by_key(|d| d.0)
    {
        head.extensions.insert(*deadline);
    }
    head
}

/// Reads a response body to its end.
async fn whole<RB>(response: Response<RB>) -> Reply
where
    RB: http_body::Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

/// A member's response: the merged response's status, headers and extensions, its own body.
fn rebuild(parts: &response::Parts, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = parts.status;
    *response.version_mut() = parts.version;
    *response.headers_mut() = parts.headers.clone();
    *response.extensions_mut() = parts.extensions.clone();
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
    *response.body_mut() = Full::new(body);
    response
}
