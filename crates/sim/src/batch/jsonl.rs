//! Batch input files: the multipart upload, and the JSONL inside it, checked against OpenAI's
//! limits (50,000 requests, 200 MB, unique `custom_id`s, one model per file).

use std::collections::HashSet;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde_json::Value;

/// The most requests in one batch.
pub(super) const MAX_REQUESTS: usize = 50_000;
/// The largest batch input file.
pub(super) const MAX_FILE_BYTES: usize = 200 * 1024 * 1024;

/// The parsed requests of a batch input file.
#[derive(Debug)]
pub(super) struct Input {
    /// The one model every request names (none if no request names one).
    pub(super) model: Option<String>,
    pub(super) requests: Vec<Request>,
}

/// One line of a batch input file.
#[derive(Debug)]
pub(super) struct Request {
    /// Its line in the file, from 1.
    pub(super) line: usize,
    pub(super) custom_id: String,
    pub(super) url: String,
    /// The request body, checked only when the batch runs (a bad one fails alone).
    pub(super) body: Value,
}

/// The fields of a `multipart/form-data` upload that matter.
#[derive(Debug, Default)]
pub(super) struct Form {
    pub(super) purpose: Option<String>,
    pub(super) filename: Option<String>,
    pub(super) file: Option<Bytes>,
}

/// Reads the `purpose` and `file` fields of a form; other fields are ignored.
pub(super) async fn read_form(content_type: Option<&str>, body: Bytes) -> Result<Form, String> {
    let boundary = content_type
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or("Invalid Content-Type header: expected multipart/form-data with a boundary.")?;
    let mut multipart = multer::Multipart::new(Full::new(body).into_data_stream(), boundary);
    let unreadable = |e: multer::Error| format!("Could not parse the multipart form: {e}.");
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        let name = field.name().map(str::to_owned);
        match name.as_deref() {
            Some("purpose") => form.purpose = Some(field.text().await.map_err(unreadable)?),
            Some("file") => {
                form.filename = field.file_name().map(str::to_owned);
                form.file = Some(field.bytes().await.map_err(unreadable)?);
            }
            _ => {}
        }
    }
    Ok(form)
}

/// Parses and checks a batch input file. Blank lines are skipped.
pub(super) fn parse(content: &[u8]) -> Result<Input, String> {
    if content.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut requests = Vec::new();
    let mut seen = HashSet::new();
    let mut model: Option<String> = None;
    for (index, text) in content.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if requests.len() == MAX_REQUESTS {
            return Err(format!(
                "The batch input file has more than the maximum of {MAX_REQUESTS} requests per batch."
            ));
        }
        let request = parse_line(line, text)?;
        if !seen.insert(request.custom_id.clone()) {
            return Err(format!(
                "Line {line}: the custom_id '{}' is used more than once; custom_id values must be unique within a batch.",
                request.custom_id
            ));
        }
        if let Some(name) = request.body.get("model").and_then(Value::as_str) {
            match &model {
                None => model = Some(name.to_owned()),
                Some(first) if first != name => {
                    return Err(format!(
                        "Line {line}: the model '{name}' differs from '{first}'; a batch input file must use a single model."
                    ));
                }
                Some(_) => {}
            }
        }
        requests.push(request);
    }
    if requests.is_empty() {
        return Err("The batch input file contains no requests.".into());
    }
    Ok(Input { model, requests })
}

fn parse_line(line: usize, text: &[u8]) -> Result<Request, String> {
    let value: Value = serde_json::from_slice(text)
        .map_err(|e| format!("Line {line} of the batch input file is not valid JSON: {e}."))?;
    let Value::Object(mut map) = value else {
        return Err(format!("Line {line}: each line must be a JSON object."));
    };
    let custom_id = match map.remove("custom_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => {
            return Err(format!(
                "Line {line}: 'custom_id' must be a non-empty string."
            ));
        }
    };
    if map.get("method").and_then(Value::as_str) != Some("POST") {
        return Err(format!("Line {line}: 'method' must be 'POST'."));
    }
    let url = match map.remove("url") {
        Some(Value::String(url)) if url.starts_with("/v1/") => url,
        _ => {
            return Err(format!(
                "Line {line}: 'url' must be an API path such as '/v1/chat/completions'."
            ));
        }
    };
    let body = match map.remove("body") {
        Some(body @ Value::Object(_)) => body,
        _ => return Err(format!("Line {line}: 'body' must be a JSON object.")),
    };
    Ok(Request {
        line,
        custom_id,
        url,
        body,
    })
}

/// The message for a file over [`MAX_FILE_BYTES`].
pub(super) fn too_large() -> String {
    format!(
        "The file is too large: batch input files may be at most {} MB.",
        MAX_FILE_BYTES / 1024 / 1024
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, model: &str) -> String {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[]}}}}"#
        )
    }

    #[test]
    fn reads_lines_in_order_and_skips_blank_ones() {
        let text = format!("{}\r\n\n{}\n", line("a", "m"), line("b", "m"));
        let input = parse(text.as_bytes()).unwrap();
        assert_eq!(input.model.as_deref(), Some("m"));
        let ids: Vec<_> = input
            .requests
            .iter()
            .map(|r| (r.line, r.custom_id.as_str()))
            .collect();
        assert_eq!(ids, [(1, "a"), (3, "b")]);
    }

    #[test]
    fn refuses_what_openai_refuses() {
        let cases = [
            (String::new(), "no requests"),
            ("{not json".to_owned(), "not valid JSON"),
            ("[1]".to_owned(), "JSON object"),
            (line("a", "m").replace("POST", "GET"), "'method'"),
            (line("", "m"), "'custom_id'"),
            (
                line("a", "m").replace("/v1/chat/completions", "chat"),
                "'url'",
            ),
            (format!("{}\n{}", line("a", "m"), line("a", "m")), "unique"),
            (
                format!("{}\n{}", line("a", "m"), line("b", "n")),
                "single model",
            ),
            ("\u{ff}".to_owned(), "not valid JSON"),
        ];
        for (text, expected) in cases {
            let error = parse(text.as_bytes()).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn at_most_fifty_thousand_requests() {
        let lines: Vec<String> = (0..=MAX_REQUESTS)
            .map(|i| line(&i.to_string(), "m"))
            .collect();
        let error = parse(lines.join("\n").as_bytes()).unwrap_err();
        assert!(error.contains("50000"), "{error}");
        assert_eq!(
            parse(lines[..MAX_REQUESTS].join("\n").as_bytes())
                .unwrap()
                .requests
                .len(),
            MAX_REQUESTS
        );
    }

    #[tokio::test]
    async fn forms_need_a_boundary() {
        let error = read_form(Some("application/json"), Bytes::new())
            .await
            .unwrap_err();
        assert!(error.contains("multipart/form-data"));
        let body = "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
            --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n\
            xyz\r\n--b--\r\n";
        let form = read_form(Some("multipart/form-data; boundary=b"), Bytes::from(body))
            .await
            .unwrap();
        assert_eq!(form.purpose.as_deref(), Some("batch"));
        assert_eq!(form.filename.as_deref(), Some("in.jsonl"));
        assert_eq!(form.file.as_deref(), Some(&b"xyz"[..]));
        let broken = read_form(
            Some("multipart/form-data; boundary=b"),
            Bytes::from("--b\r\ngarbage"),
        )
        .await;
        assert!(broken.is_err());
    }
}
