//! Running one batched request: the same parsing and rendering as the synchronous endpoints,
//! without their limits, faults or latency, and seeded by the batch and the line.

use std::time::Duration;

use rand::RngExt as _;
use serde_json::{Value, json};

use super::jsonl::Request;
use crate::answer::Answer;
use crate::ask::{self, Ask};
use crate::prompt_cache::Cached;
use crate::state::Shared;
use crate::{anthropic, openai, text};

/// The random source key of request `line` of batch `ordinal`: the top bit keeps it apart from
/// every live request number, so a batch's answers never depend on the traffic around it.
pub(super) fn line_key(ordinal: u64, line: usize) -> u64 {
    (1 << 63) | (ordinal << 24) | (line as u64 & 0xFF_FFFF)
}

/// What one request produced: its body and token counts.
pub(super) struct Done {
    pub(super) body: Value,
    pub(super) input_tokens: u64,
    pub(super) output_tokens: u64,
}

/// The answer to `ask`, drawn from `key` the way the synchronous endpoints draw theirs.
fn answer(shared: &Shared, key: u64, ask: &Ask, created: u64) -> Answer {
    let output = &shared.config.output;
    let mut rng = shared.rng(key);
    let low = output.min_tokens.min(output.max_tokens);
    let natural = rng.random_range(low..=output.max_tokens);
    let tokens = u64::from(natural).min(ask.max_tokens);
    Answer {
        seq: key,
        created,
        model: ask.model.clone(),
        prompt_tokens: ask.prompt_tokens,
        // Batches are served apart from the keys' caches.
        cached: Cached::default(),
        words: text::answer(u32::try_from(tokens).unwrap_or(u32::MAX), &mut rng),
        truncated: u64::from(natural) > ask.max_tokens,
        per_token: Duration::ZERO,
        broken: None,
    }
}

/// An OpenAI request to `endpoint` (`/v1/chat/completions` or `/v1/embeddings`); a `stream`
/// flag is ignored, as a batch never streams.
pub(super) fn openai(
    shared: &Shared,
    key: u64,
    endpoint: &str,
    body: &Value,
    created: u64,
) -> Result<Done, String> {
    let output = &shared.config.output;
    let (bytes, ask, output_tokens) = if endpoint == "/v1/embeddings" {
        let ask = ask::embeddings(body, output)?;
        let inputs = ask.embeddings.as_ref().ok_or("'$.input' is invalid.")?;
        let bytes = openai::embeddings(&ask.model, inputs, ask.prompt_tokens, shared.config.seed);
        (bytes, ask, 0)
    } else {
        let ask = ask::chat(body, output)?;
        let answer = answer(shared, key, &ask, created);
        (openai::completion(&answer), ask, answer.words.len() as u64)
    };
    Ok(Done {
        body: parse(&bytes),
        input_tokens: ask.prompt_tokens,
        output_tokens,
    })
}

/// An Anthropic Messages request.
pub(super) fn message(
    shared: &Shared,
    key: u64,
    params: &Value,
    created: u64,
) -> Result<Done, String> {
    let ask = ask::messages(params)?;
    let answer = answer(shared, key, &ask, created);
    Ok(Done {
        body: parse(&anthropic::message(&answer)),
        input_tokens: ask.prompt_tokens,
        output_tokens: answer.words.len() as u64,
    })
}

/// What a batch's requests came to.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) succeeded: u64,
    pub(super) failed: u64,
    pub(super) canceled: u64,
    /// Not run before the batch expired.
    pub(super) expired: u64,
    pub(super) input_tokens: u64,
    pub(super) output_tokens: u64,
}

impl Tally {
    fn add(&mut self, done: &Done) {
        self.succeeded += 1;
        self.input_tokens += done.input_tokens;
        self.output_tokens += done.output_tokens;
    }
}

/// What OpenAI writes for a request its batch expired before running.
const EXPIRED_MESSAGE: &str =
    "This request could not be executed before the completion window expired.";

/// Runs the first `processed` requests of OpenAI batch `ordinal` (the batch expired before
/// the others): the output lines (the successes) and the error lines (the refusals, then the
/// expired requests), each in input order.
pub(super) fn openai_batch(
    shared: &Shared,
    ordinal: u64,
    endpoint: &str,
    requests: &[Request],
    created: u64,
    processed: usize,
) -> (Tally, Vec<u8>, Vec<u8>) {
    let (mut tally, mut output, mut errors) = (Tally::default(), Vec::new(), Vec::new());
    for (line, request) in requests.iter().enumerate() {
        let id = format!("batch_req_sim{ordinal:08}{line:08}");
        if line >= processed {
            tally.expired += 1;
            let error = json!({"code": "batch_expired", "message": EXPIRED_MESSAGE});
            let record = json!({"id": id, "custom_id": request.custom_id, "response": null,
                "error": error});
            push_line(&mut errors, &record);
            continue;
        }
        let key = line_key(ordinal, line);
        let (sink, status, body) = match openai(shared, key, endpoint, &request.body, created) {
            Ok(done) => {
                tally.add(&done);
                (&mut output, 200, done.body)
            }
            Err(message) => {
                tally.failed += 1;
                let error = json!({"message": message, "type": "invalid_request_error",
                    "param": null, "code": null});
                (&mut errors, 400, json!({"error": error}))
            }
        };
        let record = json!({
            "id": id,
            "custom_id": request.custom_id,
            "response": {"status_code": status, "request_id": format!("req_sim{key:016x}"),
                "body": body},
            "error": null,
        });
        push_line(sink, &record);
    }
    (tally, output, errors)
}

/// How a message batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    /// Every request ran.
    Completed,
    /// No request ran.
    Canceled,
    /// Only the first this many requests ran.
    Expired(usize),
}

/// Runs the requests of message batch `ordinal` that its `ending` let run (the others are
/// `canceled` or `expired`): the results JSONL, in request order.
pub(super) fn message_batch(
    shared: &Shared,
    ordinal: u64,
    requests: &[(String, Value)],
    created: u64,
    ending: Ending,
) -> (Tally, Vec<u8>) {
    let (mut tally, mut results) = (Tally::default(), Vec::new());
    for (line, (custom_id, params)) in requests.iter().enumerate() {
        let result = if ending == Ending::Canceled {
            tally.canceled += 1;
            json!({"type": "canceled"})
        } else if matches!(ending, Ending::Expired(processed) if line >= processed) {
            tally.expired += 1;
            json!({"type": "expired"})
        } else {
            match message(shared, line_key(ordinal, line), params, created) {
                Ok(done) => {
                    tally.add(&done);
                    json!({"type": "succeeded", "message": done.body})
                }
                Err(message) => {
                    tally.failed += 1;
                    let error = json!({"type": "invalid_request_error", "message": message});
                    json!({"type": "errored", "error": {"type": "error", "error": error}})
                }
            }
        };
        push_line(
            &mut results,
            &json!({"custom_id": custom_id, "result": result}),
        );
    }
    (tally, results)
}

fn push_line(sink: &mut Vec<u8>, record: &Value) {
    sink.extend_from_slice(record.to_string().as_bytes());
    sink.push(b'\n');
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use serde_json::json;

    #[test]
    fn keys_never_meet_live_request_numbers() {
        assert_ne!(line_key(0, 0), 0);
        assert!(line_key(1, 0) > u64::from(u32::MAX));
        assert_ne!(line_key(1, 1), line_key(2, 1));
        assert_ne!(line_key(1, 1), line_key(1, 2));
    }

    #[test]
    fn the_same_key_gives_the_same_answer() {
        let shared = Shared::new(SimConfig::default());
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let a = openai(&shared, line_key(1, 0), "/v1/chat/completions", &body, 0).unwrap();
        let b = openai(&shared, line_key(1, 0), "/v1/chat/completions", &body, 0).unwrap();
        let c = openai(&shared, line_key(1, 1), "/v1/chat/completions", &body, 0).unwrap();
        assert_eq!(a.body, b.body);
        assert_ne!(a.body["choices"], c.body["choices"]);
        assert_eq!(a.body["usage"]["completion_tokens"], a.output_tokens);

        let embed = json!({"model": "e", "input": ["a", "b"]});
        let e = openai(&shared, 1, "/v1/embeddings", &embed, 0).unwrap();
        assert_eq!(e.body["data"].as_array().map(Vec::len), Some(2));
        assert!(openai(&shared, 1, "/v1/embeddings", &body, 0).is_err());
        assert!(message(&shared, 1, &body, 0).is_err());
    }

    fn jsonl(bytes: &[u8]) -> Vec<Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn expired_openai_requests_go_to_the_error_file_after_the_processed_ones() {
        let shared = Shared::new(SimConfig::default());
        let good = json!({"model": "m", "max_tokens": 3,
            "messages": [{"role": "user", "content": "hi"}]});
        let bad = json!({"model": "m", "messages": []});
        let requests: Vec<Request> = [("a", &good), ("b", &bad), ("c", &good), ("d", &good)]
            .into_iter()
            .enumerate()
            .map(|(i, (id, body))| Request {
                line: i + 1,
                custom_id: id.into(),
                url: "/v1/chat/completions".into(),
                body: body.clone(),
            })
            .collect();
        let endpoint = "/v1/chat/completions";
        let (tally, output, errors) = openai_batch(&shared, 3, endpoint, &requests, 0, 2);
        assert_eq!(
            (tally.succeeded, tally.failed, tally.expired),
            (1, 1, 2),
            "{tally:?}"
        );
        let output = jsonl(&output);
        assert_eq!(output.len(), 1);
        assert_eq!(output[0]["custom_id"], "a");
        let errors = jsonl(&errors);
        let ids: Vec<&str> = errors
            .iter()
            .map(|e| e["custom_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["b", "c", "d"]);
        assert_eq!(errors[0]["response"]["status_code"], 400);
        assert_eq!(
            errors[1],
            json!({"id": "batch_req_sim0000000300000002", "custom_id": "c", "response": null,
                "error": {"code": "batch_expired", "message": EXPIRED_MESSAGE}})
        );

        // The processed lines are the very ones a completed batch would have written.
        let (_, full, _) = openai_batch(&shared, 3, endpoint, &requests, 0, 4);
        assert_eq!(jsonl(&full)[0], output[0]);
    }

    #[test]
    fn expired_message_requests_are_marked_expired() {
        let shared = Shared::new(SimConfig::default());
        let params = json!({"model": "c", "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}]});
        let requests: Vec<(String, Value)> = ["x", "y", "z"]
            .into_iter()
            .map(|id| (id.to_owned(), params.clone()))
            .collect();
        let (tally, results) = message_batch(&shared, 1, &requests, 0, Ending::Expired(1));
        assert_eq!((tally.succeeded, tally.expired), (1, 2));
        let results = jsonl(&results);
        assert_eq!(results[0]["result"]["type"], "succeeded");
        for (record, id) in results[1..].iter().zip(["y", "z"]) {
            assert_eq!(
                *record,
                json!({"custom_id": id, "result": {"type": "expired"}})
            );
        }
        let (tally, results) = message_batch(&shared, 1, &requests, 0, Ending::Canceled);
        assert_eq!((tally.canceled, tally.expired), (3, 0));
        assert!(
            jsonl(&results)
                .iter()
                .all(|r| r["result"]["type"] == "canceled")
        );
        let (tally, _) = message_batch(&shared, 1, &requests, 0, Ending::Completed);
        assert_eq!(tally.succeeded, 3);
    }
}
