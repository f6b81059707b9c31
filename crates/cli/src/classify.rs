//! `tollgate classify`: read a captured response, print its Outcome and rate-limit snapshot.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Serialize;
use tollgate_core::classify::classify_response;
use tollgate_core::{Outcome, Provider, RateLimitSnapshot, RateLimitWindow};

/// Arguments of `tollgate classify`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The captured response; `-` or nothing reads standard input.
    file: Option<PathBuf>,
    /// Print exactly one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The provider that sent it, when the header names leave a convention open (Groq counts
    /// requests per day).
    #[arg(long)]
    provider: Option<Provider>,
}

/// A captured HTTP response.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let input = read_input(args.file.as_ref())?;
    let captured = parse_response(&input)?;
    let now = SystemTime::now();
    let outcome = classify_response(captured.status, &captured.headers, &captured.body, now);
    let snapshot = RateLimitSnapshot::from_headers(&captured.headers, args.provider, now);
    let text = if args.json {
        let mut json = serde_json::to_string(&Report::new(&outcome, &snapshot))
            .map_err(|e| format!("cannot encode the report: {e}"))?;
        json.push('\n');
        json
    } else {
        human(&outcome, &snapshot)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| format!("cannot write the report: {e}"))
}

fn read_input(file: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    let mut input = Vec::new();
    match file {
        Some(path) if path.as_os_str() != "-" => {
            input =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
        }
    }
    Ok(input)
}

/// Parses a status line, headers, a blank line and a body. `HTTP/2` and `HTTP/3` status lines
/// (as `curl -i` prints them) are accepted as well as `HTTP/1.x`; bare `\n` line ends too.
pub(crate) fn parse_response(input: &[u8]) -> Result<Captured, String> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let line_end = input
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("malformed response: no status line")?;
    let status_line = String::from_utf8_lossy(&input[..line_end]);
    let mut words = status_line.split_whitespace();
    let version = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(format!(
            "malformed response: status line {status_line:?} does not start with HTTP/"
        ));
    }
    let status = words
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("malformed response: no status code in {status_line:?}"))?;

    let mut headers = HeaderMap::new();
    let mut rest = &input[line_end + 1..];
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("malformed response: the headers do not end with a blank line")?;
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        rest = &rest[end + 1..];
        if line.is_empty() {
            break;
        }
        let mut parsed = [httparse::EMPTY_HEADER; 1];
        let mut raw = line.to_vec();
        raw.extend_from_slice(b"\r\n\r\n");
        match httparse::parse_headers(&raw, &mut parsed) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                return Err(format!(
                    "malformed response: bad header line {:?}",
                    String::from_utf8_lossy(line)
                ));
            }
        }
        let name = HeaderName::from_bytes(parsed[0].name.as_bytes())
            .map_err(|_| format!("malformed response: bad header name {:?}", parsed[0].name))?;
        let value = HeaderValue::from_bytes(parsed[0].value)
            .map_err(|_| format!("malformed response: bad value for header {name}"))?;
        headers.append(name, value);
    }
    Ok(Captured {
        status,
        headers,
        body: rest.to_vec(),
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Serialize)]
struct Report {
    outcome: &'static str,
    retryable: bool,
    retry_after_ms: Option<u64>,
    dimension: Option<&'static str>,
    rate_limit: Limits,
}

#[derive(Debug, Serialize)]
struct Limits {
    requests: Option<Window>,
    tokens: Option<Window>,
    input_tokens: Option<Window>,
    output_tokens: Option<Window>,
}

#[derive(Debug, Serialize)]
struct Window {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_ms: Option<u64>,
}

impl Report {
    fn new(outcome: &Outcome, snapshot: &RateLimitSnapshot) -> Self {
        let window = |w: Option<RateLimitWindow>| {
            w.map(|w| Window {
                limit: w.limit,
                remaining: w.remaining,
                reset_ms: w.reset.map(millis),
            })
        };
        Self {
            outcome: outcome.kind.as_str(),
            retryable: outcome.is_retryable(),
            retry_after_ms: outcome.retry_after.map(millis),
            dimension: outcome.dimension().map(|d| d.as_str()),
            rate_limit: Limits {
                requests: window(snapshot.requests),
                tokens: window(snapshot.tokens),
                input_tokens: window(snapshot.input_tokens),
                output_tokens: window(snapshot.output_tokens),
            },
        }
    }
}

fn human(outcome: &Outcome, snapshot: &RateLimitSnapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "outcome:     {}", outcome.kind);
    if let Some(status) = outcome.status {
        let reason = status.canonical_reason().unwrap_or_default();
        let _ = writeln!(out, "status:      {} {reason}", status.as_u16());
    }
    let retry = if outcome.is_retryable() { "yes" } else { "no" };
    let _ = writeln!(out, "retryable:   {retry}");
    if let Some(wait) = outcome.retry_after {
        let _ = writeln!(out, "retry after: {wait:?}");
    }
    let windows = [
        ("requests", snapshot.requests),
        ("tokens", snapshot.tokens),
        ("input tokens", snapshot.input_tokens),
        ("output tokens", snapshot.output_tokens),
    ];
    if windows.iter().any(|(_, w)| w.is_some()) {
        let _ = writeln!(out, "rate limits:");
    }
    for (name, window) in windows {
        let Some(w) = window else { continue };
        let show = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        let reset = w.reset.map_or_else(|| "?".to_owned(), |r| format!("{r:?}"));
        let _ = writeln!(
            out,
            "  {name:<14} limit {:<9} remaining {:<9} reset {reset}",
            show(w.limit),
            show(w.remaining),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http1_http2_and_bare_newlines() {
        let crlf =
            parse_response(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\n\r\n{}").unwrap();
        assert_eq!(crlf.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(crlf.headers["retry-after"], "2");
        assert_eq!(crlf.body, b"{}");

        let h2 = parse_response(b"HTTP/2 529\nx-should-retry: true\n\nbody\nmore").unwrap();
        assert_eq!(h2.status.as_u16(), 529);
        assert_eq!(h2.body, b"body\nmore");
    }

    #[test]
    fn rejects_malformed_input_with_one_line() {
        for bad in [
            &b""[..],
            b"hello\n\n",
            b"HTTP/1.1 abc\n\n",
            b"HTTP/1.1 200 OK\nno-blank-line: 1\n",
            b"HTTP/1.1 200 OK\nbad header\n\n",
        ] {
            let error = parse_response(bad).unwrap_err();
            assert!(error.starts_with("malformed response"), "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
