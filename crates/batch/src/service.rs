use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::PollSemaphore;
use tollgate_core::BoxError;
use tower::Service;
use tower::util::Oneshot;

use crate::codec::BatchCodec;
use crate::error::{BatcherClosed, QueueFull};
use crate::group_key::GroupKey;
use crate::layer::{BatchLayer, WhenFull};
use crate::worker::{Item, Reply, Worker};

/// The response body: cut from a merged response, or the inner body of a request sent alone.
pub type BatchBody<B> = Either<Full<Bytes>, B>;

/// The service made by [`BatchLayer`].
///
/// `poll_ready` reserves a place in the batcher's queue (waiting while it is full, unless the
/// layer is set to [fail](WhenFull::Fail)); `call` hands the request to the batcher, or sends
/// it alone when the codec cannot merge it.
pub struct Batch<S, C: BatchCodec> {
    inner: S,
    shared: Arc<Shared<S, C>>,
    semaphore: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
}

struct Shared<S, C: BatchCodec> {
    layer: BatchLayer<C>,
    tx: mpsc::UnboundedSender<Item<C>>,
    /// The worker, until the first request starts it.
    idle: Mutex<Option<Worker<S, C>>>,
}

impl<S, C: BatchCodec> fmt::Debug for Batch<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("config", &self.shared.layer.config)
            .field("holds_slot", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: Clone, C: BatchCodec> Clone for Batch<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            semaphore: self.semaphore.clone(),
            permit: None,
        }
    }
}

impl<S: Clone, C: BatchCodec> Batch<S, C> {
    pub(crate) fn new(inner: S, layer: BatchLayer<C>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let semaphore = Arc::new(Semaphore::new(layer.config.queue_capacity));
        let worker = Worker::new(inner.clone(), layer.clone(), rx);
        Self {
            inner,
            shared: Arc::new(Shared {
                layer,
                tx,
                idle: Mutex::new(Some(worker)),
            }),
            semaphore: PollSemaphore::new(semaphore),
            permit: None,
        }
    }

    /// Requests waiting in the batcher now.
    pub fn queued(&self) -> usize {
        self.shared.layer.config.queue_capacity - self.semaphore.available_permits()
    }
}

impl<S, C, RB> Service<Request<Full<Bytes>>> for Batch<S, C>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
    C: BatchCodec,
{
    type Response = Response<BatchBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() && self.shared.layer.config.when_full == WhenFull::Wait {
            match ready!(self.semaphore.poll_acquire(cx)) {
                Some(permit) => self.permit = Some(permit),
                None => return Poll::Ready(Err(Box::new(BatcherClosed))),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let (head, body) = request.into_parts();
        let body = tollgate_core::body::full_bytes(body);
        let layer = &self.shared.layer;
        let Some((key, weight, member)) = layer.codec.admit(&head, &body) else {
            // Not mergeable: straight through, and the queue place goes back.
            self.permit = None;
            let request = Request::from_parts(head, Full::new(body));
            return ResponseFuture::direct(self.inner.clone().oneshot_call(request));
        };
        let permit = match (self.permit.take(), layer.config.when_full) {
            (Some(permit), _) => permit,
            (None, WhenFull::Fail) => match self.semaphore.clone_inner().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    return ResponseFuture::failed(Box::new(QueueFull {
                        capacity: layer.config.queue_capacity,
                    }));
                }
            },
            (None, WhenFull::Wait) => panic!("Batch::call without poll_ready"),
        };
        if let Some(worker) = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            tokio::spawn(worker.run());
        }
        let (tx, rx) = oneshot::channel();
        let item = Item {
            key: GroupKey::new(key, &head.headers),
            weight,
            member,
            head,
            body,
            reply: tx,
            slot: Some(permit),
            queued_at: Instant::now(),
        };
        match self.shared.tx.send(item) {
            Ok(()) => ResponseFuture::queued(rx),
            Err(_) => ResponseFuture::failed(Box::new(BatcherClosed)),
        }
    }
}

/// `oneshot` without the `ServiceExt` import clash on a generic `S`.
trait OneshotCall<R>: Service<R> + Sized {
    fn oneshot_call(self, request: R) -> Oneshot<Self, R> {
        Oneshot::new(self, request)
    }
}

impl<S: Service<R>, R> OneshotCall<R> for S {}

pin_project! {
    /// The answer to one request: from the batcher, or from the inner service directly.
    pub struct ResponseFuture<S, RB>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        kind: Kind<S>,
        _body: std::marker::PhantomData<fn() -> RB>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        Direct { #[pin] call: Oneshot<S, Request<Full<Bytes>>> },
        Queued { #[pin] reply: oneshot::Receiver<Reply> },
        Failed { error: Option<BoxError> },
    }
}

impl<S, RB> ResponseFuture<S, RB>
where
    S: Service<Request<Full<Bytes>>>,
{
    fn direct(call: Oneshot<S, Request<Full<Bytes>>>) -> Self {
        Self::of(Kind::Direct { call })
    }

    fn queued(reply: oneshot::Receiver<Reply>) -> Self {
        Self::of(Kind::Queued { reply })
    }

    fn failed(error: BoxError) -> Self {
        Self::of(Kind::Failed { error: Some(error) })
    }

    fn of(kind: Kind<S>) -> Self {
        Self {
            kind,
            _body: std::marker::PhantomData,
        }
    }
}

impl<S, RB> Future for ResponseFuture<S, RB>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<BatchBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Direct { call } => {
                let response = ready!(call.poll(cx)).map_err(Into::into)?;
                Poll::Ready(Ok(response.map(Either::Right)))
            }
            KindProj::Queued { reply } => match ready!(reply.poll(cx)) {
                Ok(reply) => Poll::Ready(reply.map(|r| r.map(Either::Left))),
                Err(_) => Poll::Ready(Err(Box::new(BatcherClosed))),
            },
            KindProj::Failed { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}

impl<S, RB> fmt::Debug for ResponseFuture<S, RB>
where
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
