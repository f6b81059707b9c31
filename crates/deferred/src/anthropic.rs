//! [`AnthropicBatchApi`]: Anthropic's Message Batches API — `/v1/messages/batches`, polling,
//! results.

use std::fmt;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use serde_json::{Value, json};
use tollgate_core::{BoxError, Secret};
use tower::ServiceExt;

use super::api::{
    BatchApi, BatchItem, BoxFuture, ItemResult, RemoteStatus, Transport, json_of, ok_body, text,
};

/// Anthropic's Message Batches API: `/v1/messages/batches` with each job as `params`, polled
/// until `processing_status` is `ended`, results read from its JSONL.
///
/// Anthropic's batches carry no metadata, so a batch whose creation a crash cut off before
/// its id was recorded cannot be found again; the window is the time between the create call
/// returning and one disk write.
#[derive(Clone)]
pub struct AnthropicBatchApi {
    base: String,
    key: Secret,
    version: String,
    transport: Transport,
}

impl fmt::Debug for AnthropicBatchApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicBatchApi")
            .field("base", &self.base)
            .field("key", &self.key)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl AnthropicBatchApi {
    /// The API at `base` (`https://api.anthropic.com`, or the simulator's URL), with `key`
    /// (`anthropic-version: 2023-06-01`), through `transport`.
    pub fn new(base: impl Into<String>, key: Secret, transport: Transport) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            key,
            version: "2023-06-01".to_owned(),
            transport,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Response<Bytes>, BoxError> {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("x-api-key", self.key.expose())
            .header("anthropic-version", &self.version)
            .header("content-type", "application/json");
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        self.transport
            .clone()
            .oneshot(request.body(Full::new(body))?)
            .await
    }
}

impl BatchApi for AnthropicBatchApi {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn upload<'a>(
        &'a self,
        _tag: &'a str,
        _items: &'a [BatchItem],
    ) -> BoxFuture<'a, Result<Option<String>, BoxError>> {
        Box::pin(async { Ok(None) })
    }

    fn create<'a>(
        &'a self,
        _tag: &'a str,
        _file_id: Option<&'a str>,
        items: &'a [BatchItem],
    ) -> BoxFuture<'a, Result<String, BoxError>> {
        Box::pin(async move {
            let mut requests = Vec::with_capacity(items.len());
            for item in items {
                let params: Value = serde_json::from_slice(&item.body)
                    .map_err(|e| format!("{}: the body is not JSON: {e}", item.custom_id))?;
                requests.push(json!({"custom_id": item.custom_id, "params": params}));
            }
            let response = self
                .call(
                    Method::POST,
                    "/v1/messages/batches",
                    Some(json!({"requests": requests})),
                )
                .await?;
            let batch = json_of(&ok_body(response, "creating a message batch")?, "a batch")?;
            Ok(text(&batch, "id", "a batch")?.to_owned())
        })
    }

    fn find<'a>(&'a self, _tag: &'a str) -> BoxFuture<'a, Result<Option<String>, BoxError>> {
        Box::pin(async { Ok(None) })
    }

    fn status<'a>(&'a self, batch_id: &'a str) -> BoxFuture<'a, Result<RemoteStatus, BoxError>> {
        Box::pin(async move {
            let response = self
                .call(
                    Method::GET,
                    &format!("/v1/messages/batches/{batch_id}"),
                    None,
                )
                .await?;
            let batch = json_of(&ok_body(response, "reading a message batch")?, "a batch")?;
            Ok(if batch["processing_status"] == "ended" {
                RemoteStatus::Ended
            } else {
                RemoteStatus::Running
            })
        })
    }

    fn results<'a>(
        &'a self,
        batch_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, ItemResult)>, BoxError>> {
        Box::pin(async move {
            let response = self
                .call(
                    Method::GET,
                    &format!("/v1/messages/batches/{batch_id}/results"),
                    None,
                )
                .await?;
            let content = ok_body(response, "reading a message batch's results")?;
            let mut results = Vec::new();
            for line in content.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let line = json_of(line, "a result line")?;
                let Some(id) = line["custom_id"].as_str() else {
                    continue;
                };
                let result = &line["result"];
                let item = match result["type"].as_str() {
                    Some("succeeded") => ItemResult::Answered {
                        status: 200,
                        body: Bytes::from(result["message"].to_string()),
                    },
                    Some("errored") => ItemResult::Failed(
                        result["error"]["error"]["message"]
                            .as_str()
                            .or_else(|| result["error"]["message"].as_str())
                            .unwrap_or("errored in the batch")
                            .to_owned(),
                    ),
                    _ => ItemResult::NotRun,
                };
                results.push((id.to_owned(), item));
            }
            Ok(results)
        })
    }
}
