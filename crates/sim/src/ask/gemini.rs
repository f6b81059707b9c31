//! Gemini's request bodies: `generateContent` (and its stream), `embedContent` and
//! `batchEmbedContents`. The model comes from the URL; field names are accepted in camelCase
//! and snake_case, as Gemini's JSON mapping accepts both. Errors are worded as Gemini words its
//! `INVALID_ARGUMENT` messages.

use serde_json::{Map, Value};

use super::{Ask, Embeddings, positive};
use crate::config::Output;
use crate::text::count_tokens;

/// Gemini's limit on one `batchEmbedContents` call.
const MAX_BATCH_EMBED_REQUESTS: usize = 100;

/// The largest `outputDimensionality` accepted.
const MAX_DIMENSIONS: u64 = 8_192;

/// `field` under its camelCase or snake_case name.
fn get<'a>(body: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    body.get(camel).or_else(|| body.get(snake))
}

/// The text of a `Content`'s parts (non-text parts carry no tokens here).
fn text(content: &Value, field: &str) -> Result<String, String> {
    match content.get("parts") {
        Some(Value::Array(parts)) if !parts.is_empty() => Ok(parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")),
        _ => Err(format!(
            "* {field}.parts: contents.parts must not be empty\n"
        )),
    }
}

/// `POST models/{model}:generateContent` (or `:streamGenerateContent`, when `stream`).
pub(crate) fn generate(
    body: &Value,
    model: &str,
    output: &Output,
    stream: bool,
) -> Result<Ask, String> {
    let contents = match body.get("contents") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => return Err("* GenerateContentRequest.contents: contents is not specified\n".into()),
    };
    // The system instruction first, as the prompt cache reads it; whitespace between texts
    // is free, so the count is the sum of theirs.
    let mut prompt = String::new();
    if let Some(system) = get(body, "systemInstruction", "system_instruction") {
        prompt.push_str(&text(system, "GenerateContentRequest.system_instruction")?);
        prompt.push(' ');
    }
    for content in contents {
        prompt.push_str(&text(content, "GenerateContentRequest.contents")?);
        prompt.push(' ');
    }
    let max_tokens = match get(body, "generationConfig", "generation_config") {
        Some(config) => {
            let field = if config.get("maxOutputTokens").is_some() {
                "maxOutputTokens"
            } else {
                "max_output_tokens"
            };
            positive(config, field)?
        }
        None => None,
    };
    Ok(Ask {
        model: model.to_owned(),
        prompt_tokens: count_tokens(&prompt),
        prompt,
        max_tokens: max_tokens.unwrap_or(u64::from(output.default_max_tokens)),
        stream,
        include_usage: true,
        embeddings: None,
        echo: Map::new(),
    })
}

/// One `EmbedContentRequest`: its text and vector size.
fn embed_request(
    request: &Value,
    model: &str,
    output: &Output,
    name: &str,
) -> Result<(String, u32), String> {
    if let Some(named) = request.get("model").and_then(Value::as_str)
        && named.strip_prefix("models/").unwrap_or(named) != model
    {
        return Err(format!(
            "* {name}.model: the model must be the one in the URL, models/{model}\n"
        ));
    }
    let content = request
        .get("content")
        .ok_or_else(|| format!("* {name}.content: content is not specified\n"))?;
    let text = text(content, &format!("{name}.content"))?;
    let field = if request.get("outputDimensionality").is_some() {
        "outputDimensionality"
    } else {
        "output_dimensionality"
    };
    let size = match positive(request, field)? {
        Some(size) if size > MAX_DIMENSIONS => {
            return Err(format!(
                "* {name}.output_dimensionality: must be at most {MAX_DIMENSIONS}, got {size}\n"
            ));
        }
        Some(size) => u32::try_from(size).unwrap_or(output.embedding_dimensions),
        None => output.embedding_dimensions,
    };
    Ok((text, size))
}

fn embeddings_ask(model: &str, requests: Vec<(String, u32)>) -> Ask {
    let prompt_tokens = requests.iter().map(|(text, _)| count_tokens(text)).sum();
    let (inputs, sizes): (Vec<String>, Vec<u32>) = requests.into_iter().unzip();
    Ask {
        model: model.to_owned(),
        prompt: String::new(),
        prompt_tokens,
        max_tokens: 0,
        stream: false,
        include_usage: false,
        embeddings: Some(Embeddings {
            inputs,
            dimensions: sizes.first().copied().unwrap_or_default(),
            base64: false,
            sizes,
        }),
        echo: Map::new(),
    }
}

/// `POST models/{model}:embedContent`.
pub(crate) fn embed(body: &Value, model: &str, output: &Output) -> Result<Ask, String> {
    let request = embed_request(body, model, output, "EmbedContentRequest")?;
    Ok(embeddings_ask(model, vec![request]))
}

/// `POST models/{model}:batchEmbedContents`: 1 to 100 requests.
pub(crate) fn batch_embed(body: &Value, model: &str, output: &Output) -> Result<Ask, String> {
    let requests = match body.get("requests") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => {
            return Err("* BatchEmbedContentsRequest.requests: requests is not specified\n".into());
        }
    };
    if requests.len() > MAX_BATCH_EMBED_REQUESTS {
        return Err(format!(
            "* BatchEmbedContentsRequest.requests: at most {MAX_BATCH_EMBED_REQUESTS} requests can be in one batch\n"
        ));
    }
    let requests = requests
        .iter()
        .enumerate()
        .map(|(i, request)| {
            embed_request(
                request,
                model,
                output,
                &format!("BatchEmbedContentsRequest.requests[{i}]"),
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(embeddings_ask(model, requests))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generate_counts_every_text_part_and_reads_the_cap() {
        let output = Output::default();
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "Hello!"}, {"text": "You are terse."}]}],
            "systemInstruction": {"parts": [{"text": "Be brief"}]},
            "generationConfig": {"maxOutputTokens": 20, "candidateCount": 1}});
        let ask = generate(&body, "gemini-2.0-flash", &output, true).unwrap();
        assert_eq!(
            (
                ask.model.as_str(),
                ask.prompt_tokens,
                ask.max_tokens,
                ask.stream
            ),
            ("gemini-2.0-flash", 2 + 4 + 2, 20, true)
        );
        let body = json!({"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"max_output_tokens": 7}});
        assert_eq!(generate(&body, "m", &output, false).unwrap().max_tokens, 7);
        let body = json!({"contents": [{"parts": [{"text": "x"}]}]});
        assert_eq!(
            generate(&body, "m", &output, false).unwrap().max_tokens,
            4_096
        );
        for bad in [
            json!({}),
            json!({"contents": []}),
            json!({"contents": [{"role": "user"}]}),
            json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": 0}}),
        ] {
            assert!(generate(&bad, "m", &output, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn embeddings_take_one_or_up_to_a_hundred() {
        let output = Output::default();
        let one = json!({"model": "models/e", "content": {"parts": [{"text": "alpha"}]}, "outputDimensionality": 8});
        let ask = embed(&one, "e", &output).unwrap();
        let inputs = ask.embeddings.unwrap();
        assert_eq!((inputs.inputs.len(), inputs.size(0)), (1, 8));
        assert!(embed(&one, "other", &output).is_err(), "model mismatch");

        let request = json!({"content": {"parts": [{"text": "beta"}]}});
        let body = json!({"requests": [one, request]});
        let inputs = batch_embed(&body, "e", &output)
            .unwrap()
            .embeddings
            .unwrap();
        assert_eq!((inputs.size(0), inputs.size(1)), (8, 1_536));

        let body = json!({"requests": vec![request.clone(); 101]});
        let error = batch_embed(&body, "e", &output).unwrap_err();
        assert!(error.contains("at most 100 requests"), "{error}");
        assert!(batch_embed(&json!({"requests": vec![request; 100]}), "e", &output).is_ok());
        let huge = json!({"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 9_000});
        assert!(embed(&huge, "e", &output).is_err());
    }
}
