//! The request pipeline of the generation and embeddings endpoints: authenticate, read,
//! validate, decide (quota, size, faults, capacity, rate limits), wait, answer.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use rand::RngExt as _;
use serde_json::Value;
use tokio::time::Instant;
use tollgate_core::BoxError;

use crate::answer::{Answer, Break};
use crate::ask;
use crate::body::SimBody;
use crate::dialect::Refuse;
use crate::limiter::Charge;
use crate::respond::{finish_headers, refuse_with};
use crate::route::{Call, Operation, api_key};
use crate::state::{InFlight, KeyRefusal, Shared};
use crate::stats::LogEntry;
use crate::{anthropic, gemini, openai, prompt_cache, responses, text};

/// Every random draw of one request, made up front in a fixed order so that the outcome of
/// request `n` under a seed never depends on which branch an earlier draw took.
struct Draws {
    natural_tokens: u32,
    hang: bool,
    error: bool,
    tail: bool,
    disconnect: bool,
    stream_error: bool,
    break_at: f64,
    overload: bool,
    stall: bool,
}

/// Serves one generation or embeddings request. A request that hangs never completes: its
/// future holds an in-flight slot until the client gives up and the connection drops it.
pub(crate) async fn generate<B>(
    shared: &Arc<Shared>,
    call: &Call,
    parts: &Parts,
    body: B,
    entry: &mut LogEntry,
) -> Response<SimBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let dialect = call.dialect;
    let seq = entry.seq;
    let context = call.context(seq);
    let refuse = |refusal, entry: &mut LogEntry, headers| {
        refuse_with(shared, dialect, context, refusal, entry, headers)
    };
    let now = Instant::now();
    let elapsed = shared.elapsed(now);
    let config = &shared.config;

    let secret = api_key(parts);
    let key = match shared.lock().key(secret.as_deref(), config, now, elapsed) {
        Ok(key) => key,
        Err(refusal) => {
            let missing = refusal == KeyRefusal::Missing;
            return refuse(Refuse::Unauthorized { missing }, entry, HeaderMap::new());
        }
    };
    entry.key = Some(shared.lock().key_state(key).name.clone());

    let bytes = match Limited::new(body, config.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            let refusal = Refuse::BodyTooLarge(config.max_body_bytes);
            return refuse(refusal, entry, HeaderMap::new());
        }
        Err(error) => {
            let refusal = Refuse::BadRequest(format!("could not read the request body: {error}"));
            return refuse(refusal, entry, HeaderMap::new());
        }
    };
    let parsed = serde_json::from_slice::<Value>(&bytes)
        .map_err(|e| format!("We could not parse the JSON body of your request ({e})."))
        .and_then(|json| ask::parse(call, json, &config.output));
    let ask = match parsed {
        Ok(ask) => ask,
        Err(message) => return refuse(Refuse::BadRequest(message), entry, HeaderMap::new()),
    };
    entry.model = Some(ask.model.clone());
    entry.stream = ask.stream;

    let conditions = shared.conditions(now);
    let (faults, latency) = (conditions.faults, conditions.latency);
    let mut rng = shared.rng(seq);
    let draws = Draws {
        natural_tokens: rng.random_range(config.output.min_tokens..=config.output.max_tokens),
        hang: rng.random_bool(faults.hang_rate),
        error: rng.random_bool(faults.error_rate),
        tail: rng.random_bool(latency.tail_probability),
        disconnect: rng.random_bool(faults.stream_disconnect_rate),
        stream_error: rng.random_bool(faults.stream_error_rate),
        break_at: rng.random_range(0.0..1.0),
        // Drawn last, so that adding it changed no earlier draw of any seed.
        overload: rng.random_bool(faults.overload_rate),
        // After every earlier draw, for the same reason.
        stall: rng.random_bool(faults.stream_stall_rate),
    };
    let output_tokens = if ask.embeddings.is_some() {
        0
    } else {
        u64::from(draws.natural_tokens).min(ask.max_tokens)
    };
    let broken = if !ask.stream || output_tokens == 0 {
        None
    } else {
        // At least one token goes out before a stream breaks.
        let at = 1 + (draws.break_at * (output_tokens - 1) as f64) as usize;
        if draws.disconnect {
            Some(Break::Disconnect(at))
        } else if draws.stream_error {
            Some(Break::ErrorEvent(at))
        } else if draws.stall {
            Some(Break::Stall(at))
        } else {
            None
        }
    };
    let sent_tokens = match broken {
        Some(Break::Disconnect(at) | Break::ErrorEvent(at) | Break::Stall(at)) => at as u64,
        None => output_tokens,
    };

    let prefixes = prompt_cache::prefixes(
        &ask.model,
        &ask.prompt,
        ask.prompt_tokens,
        &config.prompt_cache,
    );

    // Decide under the lock, and read the headers in the same critical section.
    let charge = Charge {
        input: ask.prompt_tokens,
        output: ask.max_tokens,
    };
    let mut headers = HeaderMap::new();
    let decision = {
        let mut state = shared.lock();
        let in_flight = state.stats.in_flight;
        let key_state = state.key_state(key);
        let decision = if key_state.quota_exhausted {
            Err(Refuse::QuotaExhausted)
        } else if let Some(refusal) = key_state.limiter.too_large(charge) {
            Err(Refuse::TooLarge {
                model: ask.model.clone(),
                refusal,
            })
        } else if draws.hang {
            Ok(None)
        } else if draws.error {
            Err(Refuse::ServerError)
        } else if draws.overload
            || faults
                .capacity
                .is_some_and(|capacity| in_flight >= u64::from(capacity))
        {
            let status = StatusCode::from_u16(faults.overload_status)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Err(Refuse::Overloaded(status))
        } else {
            match key_state.limiter.admit(charge, now) {
                Ok(()) => Ok(Some(())),
                Err(refusal) => {
                    let view = key_state.limiter.view(refusal.dimension, now);
                    let used = view.map_or(0, |v| v.limit.saturating_sub(v.remaining));
                    if key_state.rate_limit_headers {
                        dialect.retry_headers(&mut headers, refusal.wait);
                    }
                    Err(Refuse::RateLimited {
                        model: ask.model.clone(),
                        refusal,
                        used,
                    })
                }
            }
        };
        let key_state = state.key_state(key);
        if key_state.rate_limit_headers {
            let wall = shared.wall(now);
            dialect.limit_headers(&mut headers, &mut key_state.limiter, now, wall);
        }
        match decision {
            Ok(Some(())) => {
                let unused = Charge {
                    input: 0,
                    output: ask.max_tokens - sent_tokens,
                };
                match broken {
                    Some(Break::Disconnect(_)) => state.stats.streams_disconnected += 1,
                    Some(Break::ErrorEvent(_)) => state.stats.stream_errors += 1,
                    Some(Break::Stall(_)) => state.stats.streams_stalled += 1,
                    None => {}
                }
                let cache = &mut state.key_state(key).prompt_cache;
                let cached = cache.serve(&prefixes, now, &config.prompt_cache);
                let in_flight = InFlight::start(shared, &mut state, key, unused, now);
                Ok(Some((in_flight, cached)))
            }
            Ok(None) => {
                state.stats.hung += 1;
                Ok(None)
            }
            Err(refusal) => Err(refusal),
        }
    };
    let (in_flight, cached) = match decision {
        Ok(Some(admitted)) => admitted,
        Ok(None) => {
            // Hold a slot, as a stuck request does, until the client gives up and drops us.
            let _slot = InFlight::start(
                shared,
                &mut shared.lock(),
                key,
                Charge {
                    input: 0,
                    output: 0,
                },
                now,
            );
            shared.lock().record(entry.clone(), config.log_capacity);
            std::future::pending::<()>().await;
            unreachable!("a hung request never completes");
        }
        Err(refusal) => return refuse(refusal, entry, headers),
    };
    entry.input_tokens = ask.prompt_tokens;
    entry.cached_input_tokens = cached.read;
    entry.output_tokens = sent_tokens;

    let slow = if draws.tail {
        latency.tail_multiplier
    } else {
        1.0
    };
    let time_to_first_token = latency.time_to_first_token.mul_f64(slow);
    let per_token = latency.per_output_token.mul_f64(slow);
    let answer = Answer {
        seq,
        created: shared
            .wall(now)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: ask.model.clone(),
        prompt_tokens: ask.prompt_tokens,
        cached,
        words: text::answer(u32::try_from(output_tokens).unwrap_or(u32::MAX), &mut rng),
        truncated: u64::from(draws.natural_tokens) > ask.max_tokens,
        per_token,
        broken,
    };
    let (body, content_type) = if ask.stream {
        wait(time_to_first_token).await;
        let (events, ending, content_type) = match call.operation {
            Operation::StreamGenerateContent { sse: true } => {
                let (events, ending) = gemini::generate_stream(&answer, true);
                (events, ending, "text/event-stream")
            }
            Operation::StreamGenerateContent { sse: false } => {
                let (events, ending) = gemini::generate_stream(&answer, false);
                (events, ending, dialect.json_content_type())
            }
            Operation::Messages => {
                let (events, ending) = anthropic::message_stream(&answer);
                (events, ending, "text/event-stream; charset=utf-8")
            }
            Operation::Responses => {
                let (events, ending) = responses::response_stream(&answer, &ask.echo);
                (events, ending, "text/event-stream; charset=utf-8")
            }
            _ => {
                let (events, ending) = openai::completion_stream(&answer, ask.include_usage);
                (events, ending, "text/event-stream; charset=utf-8")
            }
        };
        (SimBody::script(events, ending), content_type)
    } else {
        let generation = per_token.saturating_mul(u32::try_from(output_tokens).unwrap_or(u32::MAX));
        wait(time_to_first_token + generation).await;
        let seed = config.seed;
        let bytes = match (&ask.embeddings, call.operation) {
            (Some(inputs), Operation::EmbedContent) => gemini::embedding_one(inputs, seed),
            (Some(inputs), Operation::BatchEmbedContents) => gemini::embedding_batch(inputs, seed),
            (Some(inputs), _) => openai::embeddings(&ask.model, inputs, ask.prompt_tokens, seed),
            (None, Operation::GenerateContent | Operation::StreamGenerateContent { .. }) => {
                gemini::generate(&answer)
            }
            (None, Operation::Messages) => anthropic::message(&answer),
            (None, Operation::Responses) => responses::response(&answer, &ask.echo),
            (None, _) => openai::completion(&answer),
        };
        (SimBody::full(bytes), dialect.json_content_type())
    };
    let mut response = Response::new(body.holding(Some(in_flight)));
    finish_headers(shared, dialect, seq, headers, content_type, &mut response);
    response
}

/// Sleeps for `duration`; a zero duration does not touch the timer (a zero sleep would still
/// wait for the timer's next tick, a millisecond).
async fn wait(duration: std::time::Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}
