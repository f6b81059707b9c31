//! [`OpenAiBatchApi`]: OpenAI's Batch API — a JSONL file, `/v1/batches`, polling, results.

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

/// Pages of `GET /v1/batches` searched for a tag (100 batches each).
const FIND_PAGES: usize = 10;

/// OpenAI's Batch API (and Azure OpenAI's, which speaks it), at half the price of calls.
///
/// A flush becomes a JSONL file (`custom_id`, `method`, `url`, `body` per line) uploaded with
/// `purpose=batch`, then a batch on its endpoint with a 24 h window and the queue's tag in its
/// `metadata`. The output file's lines answer their jobs by `custom_id`; the error file's lines
/// fail them, except `batch_expired` ones, which go into a later flush.
#[derive(Clone)]
pub struct OpenAiBatchApi {
    base: String,
    key: Secret,
    transport: Transport,
}

impl fmt::Debug for OpenAiBatchApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiBatchApi")
            .field("base", &self.base)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl OpenAiBatchApi {
    /// The API at `base` (`https://api.openai.com`, or the simulator's URL), with `key`,
    /// through `transport`.
    pub fn new(base: impl Into<String>, key: Secret, transport: Transport) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            key,
            transport,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Bytes>, BoxError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.key.expose()));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.transport
            .clone()
            .oneshot(request.body(Full::new(body))?)
            .await
    }

    async fn get_json(&self, path: &str, what: &str) -> Result<Value, BoxError> {
        let response = self.call(Method::GET, path, None, Bytes::new()).await?;
        json_of(&ok_body(response, what)?, what)
    }

    async fn file(&self, id: &str) -> Result<Bytes, BoxError> {
        let response = self
            .call(
                Method::GET,
                &format!("/v1/files/{id}/content"),
                None,
                Bytes::new(),
            )
            .await?;
        ok_body(response, "downloading a batch file")
    }
}

/// A multipart form with `purpose=batch` and the file.
fn multipart(tag: &str, jsonl: &[u8]) -> (String, Bytes) {
    let boundary = format!("tollgate-{tag}");
    let mut body = Vec::with_capacity(jsonl.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{tag}.jsonl\"\r\n\
             Content-Type: application/jsonl\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(jsonl);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

fn jsonl(items: &[BatchItem]) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::new();
    for item in items {
        let body: Value = serde_json::from_slice(&item.body)
            .map_err(|e| format!("{}: the body is not JSON: {e}", item.custom_id))?;
        serde_json::to_writer(
            &mut out,
            &json!({"custom_id": item.custom_id, "method": "POST", "url": item.path, "body": body}),
        )?;
        out.push(b'\n');
    }
    Ok(out)
}

impl BatchApi for OpenAiBatchApi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn upload<'a>(
        &'a self,
        tag: &'a str,
        items: &'a [BatchItem],
    ) -> BoxFuture<'a, Result<Option<String>, BoxError>> {
        Box::pin(async move {
            let (content_type, body) = multipart(tag, &jsonl(items)?);
            let response = self
                .call(Method::POST, "/v1/files", Some(&content_type), body)
                .await?;
            let file = json_of(&ok_body(response, "uploading a batch file")?, "a file")?;
            Ok(Some(text(&file, "id", "a file")?.to_owned()))
        })
    }

    fn create<'a>(
        &'a self,
        tag: &'a str,
        file_id: Option<&'a str>,
        items: &'a [BatchItem],
    ) -> BoxFuture<'a, Result<String, BoxError>> {
        Box::pin(async move {
            let file_id = file_id.ok_or("an OpenAI batch needs its uploaded file")?;
            let endpoint = items
                .first()
                .map_or("/v1/chat/completions", |i| i.path.as_str());
            let body = json!({"input_file_id": file_id, "endpoint": endpoint,
                "completion_window": "24h", "metadata": {"tollgate": tag}});
            let response = self
                .call(
                    Method::POST,
                    "/v1/batches",
                    Some("application/json"),
                    Bytes::from(body.to_string()),
                )
                .await?;
            let batch = json_of(&ok_body(response, "creating a batch")?, "a batch")?;
            Ok(text(&batch, "id", "a batch")?.to_owned())
        })
    }

    fn find<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Result<Option<String>, BoxError>> {
        Box::pin(async move {
            let mut after: Option<String> = None;
            for _ in 0..FIND_PAGES {
                let path = match &after {
                    Some(after) => format!("/v1/batches?limit=100&after={after}"),
                    None => "/v1/batches?limit=100".to_owned(),
                };
                let page = self.get_json(&path, "listing batches").await?;
                let data = page["data"].as_array().cloned().unwrap_or_default();
                if let Some(found) = data.iter().find(|b| b["metadata"]["tollgate"] == tag) {
                    return Ok(Some(text(found, "id", "a batch")?.to_owned()));
                }
                if page["has_more"] != true {
                    break;
                }
                after = data
                    .last()
                    .and_then(|b| b["id"].as_str())
                    .map(str::to_owned);
                if after.is_none() {
                    break;
                }
            }
            Ok(None)
        })
    }

    fn status<'a>(&'a self, batch_id: &'a str) -> BoxFuture<'a, Result<RemoteStatus, BoxError>> {
        Box::pin(async move {
            let batch = self
                .get_json(&format!("/v1/batches/{batch_id}"), "reading a batch")
                .await?;
            Ok(match text(&batch, "status", "a batch")? {
                "validating" | "in_progress" | "finalizing" | "cancelling" => RemoteStatus::Running,
                _ => RemoteStatus::Ended,
            })
        })
    }

    fn results<'a>(
        &'a self,
        batch_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, ItemResult)>, BoxError>> {
        Box::pin(async move {
            let batch = self
                .get_json(&format!("/v1/batches/{batch_id}"), "reading a batch")
                .await?;
            let mut results = Vec::new();
            if batch["status"] == "failed" {
                // Validation failed: nothing ran, and nothing will (the input itself is wrong).
                let why = batch["errors"]["data"][0]["message"]
                    .as_str()
                    .unwrap_or("the batch failed validation")
                    .to_owned();
                let input = self.file(text(&batch, "input_file_id", "a batch")?).await?;
                for line in input.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    let line = json_of(line, "an input line")?;
                    if let Some(id) = line["custom_id"].as_str() {
                        results.push((id.to_owned(), ItemResult::Failed(why.clone())));
                    }
                }
                return Ok(results);
            }
            for (field, errors) in [("output_file_id", false), ("error_file_id", true)] {
                let Some(file) = batch[field].as_str() else {
                    continue;
                };
                let content = self.file(file).await?;
                for line in content.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    let line = json_of(line, "a result line")?;
                    let Some(id) = line["custom_id"].as_str() else {
                        continue;
                    };
                    let result = match (&line["response"], &line["error"]) {
                        (Value::Object(response), _) if !errors || line["error"].is_null() => {
                            ItemResult::Answered {
                                status: response
                                    .get("status_code")
                                    .and_then(Value::as_u64)
                                    .and_then(|s| u16::try_from(s).ok())
                                    .unwrap_or(200),
                                body: Bytes::from(
                                    response
                                        .get("body")
                                        .map_or_else(String::new, Value::to_string),
                                ),
                            }
                        }
                        (_, error)
                            if error["code"] == "batch_expired"
                                || error["code"] == "batch_cancelled" =>
                        {
                            ItemResult::NotRun
                        }
                        (_, error) => ItemResult::Failed(
                            error["message"]
                                .as_str()
                                .unwrap_or("failed in the batch")
                                .to_owned(),
                        ),
                    };
                    results.push((id.to_owned(), result));
                }
            }
            Ok(results)
        })
    }
}
