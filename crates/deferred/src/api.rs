//! What the queue needs from a provider's Batch API, and the HTTP transport it calls through.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tollgate_core::BoxError;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// A boxed future: the Batch API calls are few and slow, so a box per call costs nothing.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the queue reaches the network: any tower service over `Request<Full<Bytes>>` (a hyper
/// client, or a whole Tollgate stack), with response bodies read whole.
pub type Transport = BoxCloneSyncService<Request<Full<Bytes>>, Response<Bytes>, BoxError>;

/// Wraps a service as a [`Transport`].
pub fn transport<S, B>(service: S) -> Transport
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(service.map_err(Into::into).and_then(
        |response: Response<B>| async move {
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
            Ok::<_, BoxError>(Response::from_parts(parts, bytes))
        },
    ))
}

/// One job as a Batch API line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchItem {
    /// The id that maps the result back to its job.
    pub custom_id: String,
    /// The endpoint's path (`/v1/chat/completions`, `/v1/messages`, ...).
    pub path: String,
    /// The request body (JSON).
    pub body: Bytes,
}

/// Where a submitted batch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteStatus {
    /// Still validating or running.
    Running,
    /// Ended (completed, failed, expired or cancelled): its results can be read.
    Ended,
}

/// One line of a batch's results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemResult {
    /// The provider answered the request (any status, as a call would have been answered).
    Answered {
        /// The status the request got.
        status: u16,
        /// Its response body.
        body: Bytes,
    },
    /// The request failed inside the batch and will not be tried again.
    Failed(String),
    /// The batch ended (expired, cancelled) before this request ran: it can go in a later one.
    NotRun,
}

/// A provider's Batch API, as the queue drives it.
///
/// The queue records each step (file uploaded, batch created) before the next, and tags the
/// batch with a string of its own (`tag`) so that after a crash [`find`](Self::find) can
/// re-attach to a batch whose creation was not recorded, instead of submitting it twice.
pub trait BatchApi: Send + Sync + 'static {
    /// A short name (`openai`, `anthropic`), stored with each flush.
    fn name(&self) -> &'static str;

    /// Uploads the input, when the API takes a file; returns its id.
    fn upload<'a>(
        &'a self,
        tag: &'a str,
        items: &'a [BatchItem],
    ) -> BoxFuture<'a, Result<Option<String>, BoxError>>;

    /// Creates the batch (from the uploaded file, or from the items), tagged with `tag`.
    fn create<'a>(
        &'a self,
        tag: &'a str,
        file_id: Option<&'a str>,
        items: &'a [BatchItem],
    ) -> BoxFuture<'a, Result<String, BoxError>>;

    /// The batch created with `tag`, if the API can tell.
    fn find<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Result<Option<String>, BoxError>>;

    /// Where the batch is.
    fn status<'a>(&'a self, batch_id: &'a str) -> BoxFuture<'a, Result<RemoteStatus, BoxError>>;

    /// The ended batch's results, by custom id.
    fn results<'a>(
        &'a self,
        batch_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, ItemResult)>, BoxError>>;
}

// Reading what a provider's API answers, shared by every BatchApi.

/// The body of a response, or the error a status other than 2xx makes.
pub(crate) fn ok_body(response: Response<Bytes>, what: &str) -> Result<Bytes, BoxError> {
    if response.status().is_success() {
        Ok(response.into_body())
    } else {
        Err(format!(
            "{what}: {} {}",
            response.status(),
            String::from_utf8_lossy(&response.body()[..response.body().len().min(300)])
        )
        .into())
    }
}

/// `bytes` as JSON, or an error that says what they were.
pub(crate) fn json_of(bytes: &[u8], what: &str) -> Result<Value, BoxError> {
    serde_json::from_slice(bytes).map_err(|e| format!("{what}: not JSON: {e}").into())
}

/// A text field of an API's answer, or an error that names it.
pub(crate) fn text<'a>(value: &'a Value, field: &str, what: &str) -> Result<&'a str, BoxError> {
    value[field]
        .as_str()
        .ok_or_else(|| format!("{what}: no {field:?} in the answer").into())
}
