//! What the gateway answers about its model groups itself: `GET /v1/models` (OpenAI's list,
//! or Anthropic's to a client that sends `anthropic-version`), `GET /v1/models/{name}`, the
//! 404 for a model it does not serve, and whether a failure means a whole group is out.

use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use http::{Method, StatusCode};
use tollgate::pool::NoMemberAvailable;

use super::admin::json;
use super::refusal::Dialect;
use super::routes::Routes;

/// When a group's models are listed as created: they are the gateway's names, not the
/// provider's models, so no date of the provider's is claimed.
const CREATED: u64 = 0;

/// The gateway's own answer to `request`, when it is about the groups (`GET /v1/models`,
/// `GET /v1/models/{name}`); `None` for every other request.
pub(crate) fn answer(routes: &Routes, request: &Request) -> Option<Response> {
    if request.method() != Method::GET {
        return None;
    }
    let path = request.uri().path();
    let anthropic = request.headers().contains_key("anthropic-version");
    let names: Vec<&str> = routes.all().iter().filter_map(|r| r.name()).collect();
    if path == "/v1/models" || path == "/v1/models/" {
        let body = if anthropic {
            serde_json::json!({
                "data": names.iter().map(|n| anthropic_model(n)).collect::<Vec<_>>(),
                "has_more": false,
                "first_id": names.first(),
                "last_id": names.last(),
            })
        } else {
            serde_json::json!({
                "object": "list",
                "data": names.iter().map(|n| openai_model(n)).collect::<Vec<_>>(),
            })
        };
        return Some(json(StatusCode::OK, &body));
    }
    let name = path.strip_prefix("/v1/models/")?;
    let dialect = if anthropic {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    Some(match names.iter().find(|n| **n == name) {
        Some(n) if anthropic => json(StatusCode::OK, &anthropic_model(n)),
        Some(n) => json(StatusCode::OK, &openai_model(n)),
        None => unknown(dialect, name, &routes.names()),
    })
}

fn openai_model(name: &str) -> serde_json::Value {
    serde_json::json!({
        "id": name,
        "object": "model",
        "created": CREATED,
        "owned_by": "tollgate",
    })
}

fn anthropic_model(name: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "model",
        "id": name,
        "display_name": name,
        "created_at": "1970-01-01T00:00:00Z",
    })
}

/// OpenAI's 404 for a model it does not have (`model_not_found`), or Anthropic's
/// `not_found_error`, naming the model and the groups this gateway serves.
pub(crate) fn unknown(dialect: Dialect, model: &str, names: &str) -> Response {
    // Bounded: a client's model name is echoed, never more than this much of it.
    let shown: String = model.chars().take(128).collect();
    let message =
        format!("The model `{shown}` does not exist on this gateway; its models are: {names}");
    let body = match dialect {
        Dialect::OpenAi => serde_json::json!({"error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }}),
        Dialect::Anthropic => serde_json::json!({"type": "error", "error": {
            "type": "not_found_error",
            "message": message,
        }}),
    };
    json(StatusCode::NOT_FOUND, &body)
}

/// The wait until a group's first member is back, when `error` says every member is out.
pub(crate) fn every_member_out(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    std::iter::successors(Some(error), |e| e.source())
        .take(32)
        .find_map(|e| e.downcast_ref::<NoMemberAvailable>())
        .map(|out| out.retry_after.unwrap_or(Duration::from_secs(60)))
}
