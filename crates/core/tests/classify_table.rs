//! Every example of the providers' API references (`docs/outcomes.md`), classified and read, with the full expected
//! `Outcome` and `RateLimitSnapshot`.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tollgate_core::classify::{classify_error, classify_response, classify_stream_error};
use tollgate_core::duration::{parse_go_duration, parse_protobuf_duration, parse_retry_after};
use tollgate_core::error::{CircuitOpen, RateLimited};
use tollgate_core::providers::{retry_after, should_retry};
use tollgate_core::{
    Outcome, OutcomeKind, Provider, RateLimitDimension, RateLimitSnapshot, RateLimitWindow,
};

use OutcomeKind::*;
use RateLimitDimension::{InputTokens, Requests, Tokens, Unknown};

/// 2025-08-21T12:40:00Z, the `date` of the Anthropic examples.
const NOW_SECS: u64 = 1_755_780_000;
const DATE: &str = "Thu, 21 Aug 2025 12:40:00 GMT";

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

const fn ms(millis: u64) -> Option<Duration> {
    Some(Duration::from_millis(millis))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|&(name, value)| {
            (
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            )
        })
        .collect()
}

const OPENAI_RATE_LIMIT: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o-mini ... on tokens per min (TPM): Limit 50000, Used 47949, Requested 3006. Please try again in 1.146s. ...","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
const OPENAI_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, ...","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
const OPENAI_TOO_LARGE: &str = r#"{"error":{"message":"Request too large for gpt-4o on tokens per min (TPM): Limit 30000, Requested 34307. ...","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
const ANTHROPIC_RATE_LIMIT: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"..."},"request_id":"req_..."}"#;
const ANTHROPIC_OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
const ANTHROPIC_API_OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"api_error","message":"Overloaded"}}"#;
const GEMINI_RATE_LIMIT: &str = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"...","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;
const GEMINI_FRACTIONAL: &str = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"...","quotaId":"GenerateContentInputTokensPerModelPerMinute-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#;
const GEMINI_PER_DAY: &str = r#"[{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"...","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}]"#;
const AZURE_RATE_LIMIT: &str = r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 37 seconds."}}"#;

struct Case {
    name: &'static str,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    kind: OutcomeKind,
    retry_after: Option<Duration>,
    should_retry: Option<bool>,
}

const fn case(name: &'static str, status: u16, body: &'static str, kind: OutcomeKind) -> Case {
    Case {
        name,
        status,
        headers: &[],
        body,
        kind,
        retry_after: None,
        should_retry: None,
    }
}

impl Case {
    const fn headers(mut self, headers: &'static [(&'static str, &'static str)]) -> Self {
        self.headers = headers;
        self
    }
    const fn wait(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
    const fn should_retry(mut self, should_retry: bool) -> Self {
        self.should_retry = Some(should_retry);
        self
    }
}

fn response_cases() -> Vec<Case> {
    vec![
        // The provider error bodies, verbatim.
        case(
            "openai rate limit",
            429,
            OPENAI_RATE_LIMIT,
            RateLimited(Tokens),
        )
        .wait(ms(1146)),
        case("openai quota", 429, OPENAI_QUOTA, QuotaExhausted),
        case(
            "openai quota keeps a header wait",
            429,
            OPENAI_QUOTA,
            QuotaExhausted,
        )
        .headers(&[("retry-after", "20")])
        .wait(ms(20_000)),
        case(
            "openai request too large",
            429,
            OPENAI_TOO_LARGE,
            RequestTooLarge,
        ),
        case(
            "anthropic rate limit",
            429,
            ANTHROPIC_RATE_LIMIT,
            RateLimited(Unknown),
        ),
        case(
            "anthropic rate limit, headers",
            429,
            ANTHROPIC_RATE_LIMIT,
            RateLimited(InputTokens),
        )
        .headers(&[
            ("anthropic-ratelimit-requests-remaining", "12"),
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            ("retry-after", "12"),
            ("x-should-retry", "true"),
        ])
        .wait(ms(12_000))
        .should_retry(true),
        case(
            "anthropic overloaded",
            529,
            ANTHROPIC_OVERLOADED,
            Overloaded,
        ),
        case(
            "overloaded_error under any status",
            500,
            ANTHROPIC_OVERLOADED,
            Overloaded,
        ),
        case(
            "anthropic api_error Overloaded",
            500,
            ANTHROPIC_API_OVERLOADED,
            Overloaded,
        ),
        case(
            "gemini rate limit",
            429,
            GEMINI_RATE_LIMIT,
            RateLimited(Requests),
        )
        .wait(ms(37_000)),
        case(
            "gemini fractional delay",
            429,
            GEMINI_FRACTIONAL,
            RateLimited(InputTokens),
        )
        .wait(ms(1500)),
        case(
            "gemini per day, in an array",
            429,
            GEMINI_PER_DAY,
            QuotaExhausted,
        )
        .wait(ms(37_000)),
        case(
            "gemini header beats RetryInfo",
            429,
            GEMINI_RATE_LIMIT,
            RateLimited(Requests),
        )
        .headers(&[("retry-after", "2")])
        .wait(ms(2000)),
        case(
            "azure rate limit",
            429,
            AZURE_RATE_LIMIT,
            RateLimited(Tokens),
        )
        .wait(ms(37_000)),
        case(
            "azure retry-after-ms wins",
            429,
            AZURE_RATE_LIMIT,
            RateLimited(Tokens),
        )
        .headers(&[
            ("retry-after-ms", "1500.5"),
            ("x-ms-retry-after-ms", "2000"),
            ("retry-after", "2"),
        ])
        .wait(Some(Duration::from_micros(1_500_500))),
        case(
            "azure x-ms-retry-after-ms",
            429,
            AZURE_RATE_LIMIT,
            RateLimited(Tokens),
        )
        .headers(&[("x-ms-retry-after-ms", "2000"), ("retry-after", "2")])
        .wait(ms(2000)),
        // Headers alone.
        case("bare 429", 429, "", RateLimited(Unknown)),
        case("retry-after seconds", 429, "", RateLimited(Unknown))
            .headers(&[("retry-after", "30")])
            .wait(ms(30_000)),
        case("retry-after fractional", 429, "", RateLimited(Unknown))
            .headers(&[("retry-after", "1.5")])
            .wait(ms(1500)),
        case(
            "retry-after date against the date header",
            503,
            "",
            Overloaded,
        )
        .headers(&[
            ("date", DATE),
            ("retry-after", "Thu, 21 Aug 2025 12:40:45 GMT"),
        ])
        .wait(ms(45_000)),
        case("retry-after date against now", 503, "", Overloaded)
            .headers(&[("retry-after", "Thu, 21 Aug 2025 12:41:00 GMT")])
            .wait(ms(60_000)),
        case("retry-after date in the past", 503, "", Overloaded)
            .headers(&[("retry-after", "Thu, 21 Aug 2025 12:00:00 GMT")])
            .wait(Some(Duration::ZERO)),
        case("x-should-retry true", 409, "", ClientError)
            .headers(&[("x-should-retry", "true")])
            .should_retry(true),
        case("x-should-retry false", 500, "", ServerError)
            .headers(&[("x-should-retry", "false")])
            .should_retry(false),
        case("success keeps header facts", 200, "not parsed", Success)
            .headers(&[("retry-after", "1"), ("x-should-retry", "FALSE")])
            .wait(ms(1000))
            .should_retry(false),
        case("success ignores an error body", 200, OPENAI_QUOTA, Success),
        // Status rules.
        case("413", 413, "", RequestTooLarge),
        case(
            "anthropic request_too_large",
            400,
            r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#,
            RequestTooLarge,
        ),
        case(
            "openai context length",
            400,
            r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            ContextLengthExceeded,
        ),
        case(
            "anthropic prompt too long",
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
            ContextLengthExceeded,
        ),
        case(
            "gemini input token count",
            400,
            r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
            ContextLengthExceeded,
        ),
        case(
            "422 context window",
            422,
            r#"{"message":"Prompt exceeds the model's context window"}"#,
            ContextLengthExceeded,
        ),
        case(
            "404 mentioning context is still a client error",
            404,
            r#"{"error":{"message":"context window"}}"#,
            ClientError,
        ),
        case(
            "400",
            400,
            r#"{"error":{"message":"Invalid 'messages'","type":"invalid_request_error"}}"#,
            ClientError,
        ),
        case("401", 401, "", AuthError),
        case("403", 403, "", AuthError),
        case(
            "anthropic permission_error",
            400,
            r#"{"type":"error","error":{"type":"permission_error","message":"..."}}"#,
            AuthError,
        ),
        case("408", 408, "", Timeout),
        case("504", 504, "", Timeout),
        case("503", 503, "", Overloaded),
        case("529", 529, "", Overloaded),
        case(
            "gemini 503",
            503,
            r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
            Overloaded,
        ),
        case(
            "gemini 500 UNAVAILABLE",
            500,
            r#"{"error":{"code":500,"status":"UNAVAILABLE"}}"#,
            Overloaded,
        ),
        case(
            "500",
            500,
            r#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
            ServerError,
        ),
        case("502 html", 502, "<html>Bad Gateway</html>", ServerError),
        case("999", 999, "", ServerError),
        case("301", 301, "", ClientError),
        case("101", 101, "", ClientError),
        case(
            "truncated body",
            429,
            r#"{"error":{"message":"Please try again in 1s","typ"#,
            RateLimited(Unknown),
        ),
    ]
}

#[test]
fn responses() {
    for c in response_cases() {
        let status = StatusCode::from_u16(c.status).unwrap();
        let got = classify_response(status, &headers(c.headers), c.body.as_bytes(), now());
        let want = Outcome {
            kind: c.kind,
            status: Some(status),
            retry_after: c.retry_after,
            should_retry: c.should_retry,
            // Checked on its own (`a_refusal_that_names_its_window_carries_it`).
            rate_limit_window: got.rate_limit_window,
        };
        assert_eq!(got, want, "{}", c.name);
    }
}

#[test]
fn stream_errors() {
    let cases: [(&str, OutcomeKind, Option<Duration>); 10] = [
        (ANTHROPIC_OVERLOADED, Overloaded, None),
        (ANTHROPIC_API_OVERLOADED, Overloaded, None),
        (
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
            ServerError,
            None,
        ),
        (
            r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error"}}"#,
            ServerError,
            None,
        ),
        (ANTHROPIC_RATE_LIMIT, RateLimited(Unknown), None),
        (OPENAI_RATE_LIMIT, RateLimited(Tokens), ms(1146)),
        (OPENAI_QUOTA, QuotaExhausted, None),
        (
            r#"{"type":"error","error":{"type":"timeout_error","message":"..."}}"#,
            Timeout,
            None,
        ),
        (
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"..."}}"#,
            ServerError,
            None,
        ),
        ("not json", ServerError, None),
    ];
    for (data, kind, retry_after) in cases {
        let want = Outcome::new(kind).with_retry_after(retry_after);
        assert_eq!(classify_stream_error(data.as_bytes()), want, "{data}");
    }
    assert_eq!(
        classify_stream_error(GEMINI_RATE_LIMIT.as_bytes()),
        Outcome::new(RateLimited(Requests)).with_retry_after(ms(37_000))
    );
}

/// A name, the provider, the headers, the expected snapshot.
type SnapshotCase<'a> = (
    &'a str,
    Option<Provider>,
    &'a [(&'a str, &'a str)],
    RateLimitSnapshot,
);

fn window(
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<Duration>,
    period: u64,
) -> Option<RateLimitWindow> {
    Some(RateLimitWindow {
        limit,
        remaining,
        reset,
        period: Some(Duration::from_secs(period)),
    })
}

#[test]
fn snapshots() {
    const DAY: u64 = 86_400;
    let openai = [
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "50000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "49500"),
        ("x-ratelimit-reset-requests", "6m0s"),
        ("x-ratelimit-reset-tokens", "12ms"),
    ];
    let anthropic = [
        ("date", DATE),
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "49"),
        ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
        ("anthropic-ratelimit-tokens-limit", "50000"),
        ("anthropic-ratelimit-tokens-remaining", "49000"),
        ("anthropic-ratelimit-tokens-reset", "2025-08-21T12:40:01.5Z"),
        ("anthropic-ratelimit-input-tokens-limit", "40000"),
        ("anthropic-ratelimit-input-tokens-remaining", "39000"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2025-08-21T14:40:30+02:00",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "10000"),
        ("anthropic-ratelimit-output-tokens-remaining", "10000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2025-08-21T12:39:00Z",
        ),
    ];
    let groq = [
        ("x-ratelimit-limit-requests", "14400"),
        ("x-ratelimit-limit-tokens", "6000"),
        ("x-ratelimit-remaining-requests", "14399"),
        ("x-ratelimit-remaining-tokens", "5500"),
        ("x-ratelimit-reset-requests", "2m59.56s"),
        ("x-ratelimit-reset-tokens", "7.66s"),
    ];
    let azure = [
        ("x-ratelimit-remaining-requests", "-1"),
        ("x-ratelimit-remaining-tokens", "1500"),
    ];
    let mistral = [
        ("x-ratelimitbysize-limit-minute", "500000"),
        ("x-ratelimitbysize-remaining-minute", "499000"),
        ("x-ratelimitbysize-limit-month", "1000000000"),
        ("x-ratelimitbysize-remaining-month", "999000000"),
    ];
    let together = [
        ("x-ratelimit-limit", "10"),
        ("x-ratelimit-remaining", "9"),
        ("x-ratelimit-reset", "1"),
        ("x-tokenlimit-limit", "2000"),
        ("x-tokenlimit-remaining", "1990"),
    ];
    let openai_want = RateLimitSnapshot {
        requests: window(Some(10_000), Some(9_999), ms(360_000), 60),
        tokens: window(Some(50_000), Some(49_500), ms(12), 60),
        ..Default::default()
    };
    let anthropic_want = RateLimitSnapshot {
        requests: window(Some(50), Some(49), ms(59_000), 60),
        tokens: window(Some(50_000), Some(49_000), ms(1_500), 60),
        input_tokens: window(Some(40_000), Some(39_000), ms(30_000), 60),
        output_tokens: window(Some(10_000), Some(10_000), Some(Duration::ZERO), 60),
        sent_at: None,
    };
    let groq_want = RateLimitSnapshot {
        requests: window(Some(14_400), Some(14_399), ms(179_560), DAY),
        tokens: window(Some(6_000), Some(5_500), ms(7_660), 60),
        ..Default::default()
    };
    let mistral_want = RateLimitSnapshot {
        tokens: window(Some(500_000), Some(499_000), None, 60),
        ..Default::default()
    };
    let together_want = RateLimitSnapshot {
        requests: window(Some(10), Some(9), ms(1000), 1),
        tokens: window(Some(2_000), Some(1_990), None, 1),
        ..Default::default()
    };
    let cases: Vec<SnapshotCase<'_>> = vec![
        (
            "openai",
            Some(Provider::OpenAi),
            &openai,
            openai_want.clone(),
        ),
        (
            "openai, unknown provider",
            None,
            &openai,
            openai_want.clone(),
        ),
        (
            "openai-compatible",
            Some(Provider::OpenAiCompatible),
            &openai,
            openai_want,
        ),
        (
            "anthropic",
            Some(Provider::Anthropic),
            &anthropic,
            anthropic_want.clone(),
        ),
        (
            "anthropic, unknown provider",
            None,
            &anthropic,
            anthropic_want,
        ),
        ("groq", Some(Provider::Groq), &groq, groq_want),
        (
            "azure -1 is unknown",
            Some(Provider::AzureOpenAi),
            &azure,
            RateLimitSnapshot {
                tokens: window(None, Some(1500), None, 60),
                ..Default::default()
            },
        ),
        (
            "mistral",
            Some(Provider::Mistral),
            &mistral,
            mistral_want.clone(),
        ),
        ("mistral, unknown provider", None, &mistral, mistral_want),
        (
            "together",
            Some(Provider::Together),
            &together,
            together_want.clone(),
        ),
        ("together, unknown provider", None, &together, together_want),
        (
            "together ignores openai names",
            Some(Provider::Together),
            &openai,
            RateLimitSnapshot::default(),
        ),
        ("nothing", None, &[], RateLimitSnapshot::default()),
        (
            "garbage",
            None,
            &[
                ("x-ratelimit-reset-tokens", "soon"),
                ("x-ratelimit-limit-tokens", "many"),
            ],
            RateLimitSnapshot::default(),
        ),
    ];
    for (name, provider, pairs, want) in cases {
        assert_eq!(
            RateLimitSnapshot::from_headers(&headers(pairs), provider, now()),
            want,
            "{name}"
        );
    }
}

#[test]
fn anthropic_resets_fall_back_to_now() {
    let map = headers(&[("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z")]);
    let later = now() + Duration::from_secs(30);
    let got = RateLimitSnapshot::from_headers(&map, Some(Provider::Anthropic), later);
    assert_eq!(got.requests, window(None, None, ms(29_000), 60));
}

#[test]
fn go_durations_from_the_reference() {
    let cases = [
        ("1s", 1_000),
        ("6m0s", 360_000),
        ("12ms", 12),
        ("2m59.56s", 179_560),
        ("1h2m3s", 3_723_000),
        ("7.66s", 7_660),
    ];
    for (input, millis) in cases {
        assert_eq!(parse_go_duration(input), ms(millis), "{input}");
        let map = headers(&[("x-ratelimit-reset-tokens", input)]);
        let got = RateLimitSnapshot::from_headers(&map, Some(Provider::OpenAi), now());
        assert_eq!(got.tokens, window(None, None, ms(millis), 60), "{input}");
    }
}

#[test]
fn retry_after_headers() {
    let wait = |pairs: &[(&str, &str)]| retry_after(&headers(pairs), now());
    assert_eq!(wait(&[("retry-after", "2")]), ms(2000));
    assert_eq!(wait(&[("retry-after", " 30 ")]), ms(30_000));
    assert_eq!(wait(&[("retry-after", "1.5")]), ms(1500));
    assert_eq!(
        wait(&[("retry-after", "Thu, 21 Aug 2025 12:40:10 GMT")]),
        ms(10_000)
    );
    assert_eq!(
        wait(&[("retry-after-ms", "250"), ("retry-after", "2")]),
        ms(250)
    );
    assert_eq!(wait(&[("x-ms-retry-after-ms", "750")]), ms(750));
    assert_eq!(wait(&[("retry-after", "soon")]), None);
    assert_eq!(parse_retry_after("-1", now()), None);
    assert_eq!(parse_protobuf_duration("37s"), ms(37_000));
    assert_eq!(parse_protobuf_duration("1.5s"), ms(1500));
    assert_eq!(
        should_retry(&headers(&[("x-should-retry", "true")])),
        Some(true)
    );
    assert_eq!(
        should_retry(&headers(&[("x-should-retry", "false")])),
        Some(false)
    );
}

#[derive(Debug)]
struct Wrapped(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request failed")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

#[tokio::test(start_paused = true)]
async fn errors() {
    use std::io::{Error, ErrorKind};

    let elapsed = tokio::time::timeout(Duration::from_secs(1), std::future::pending::<()>())
        .await
        .unwrap_err();
    assert_eq!(classify_error(&elapsed), Outcome::new(Timeout));
    assert_eq!(
        classify_error(&tower::timeout::error::Elapsed::new()),
        Outcome::new(Timeout)
    );
    assert_eq!(
        classify_error(&Wrapped(Box::new(elapsed))),
        Outcome::new(Timeout)
    );

    let io = [
        (ErrorKind::TimedOut, Timeout),
        // Never sent: no connection was made.
        (ErrorKind::ConnectionRefused, ConnectError),
        (ErrorKind::AddrNotAvailable, ConnectError),
        // Perhaps sent: the connection broke before an answer.
        (ErrorKind::ConnectionReset, ConnectionLost),
        (ErrorKind::ConnectionAborted, ConnectionLost),
        (ErrorKind::NotConnected, ConnectionLost),
        (ErrorKind::BrokenPipe, ConnectionLost),
        (ErrorKind::UnexpectedEof, ConnectionLost),
        (ErrorKind::Other, ConnectionLost),
    ];
    for (kind, want) in io {
        let wrapped = Wrapped(Box::new(Error::from(kind)));
        assert_eq!(classify_error(&wrapped), Outcome::new(want), "{kind:?}");
    }
    // An unrecognised outer error does not hide a timeout inside an io::Error.
    let nested = Wrapped(Box::new(Error::other(Wrapped(Box::new(Error::from(
        ErrorKind::TimedOut,
    ))))));
    assert_eq!(classify_error(&nested), Outcome::new(Timeout));

    let limited = RateLimited {
        dimension: Tokens,
        retry_after: ms(300),
    };
    assert_eq!(
        classify_error(&Wrapped(Box::new(limited))),
        Outcome::new(RateLimited(Tokens)).with_retry_after(ms(300))
    );
    let open = Wrapped(Box::new(Error::new(
        ErrorKind::TimedOut,
        CircuitOpen::new(None),
    )));
    assert_eq!(
        classify_error(&open),
        Outcome::new(Overloaded),
        "a local rejection anywhere wins"
    );
    assert_eq!(
        classify_error(&std::fmt::Error),
        Outcome::new(ConnectionLost),
        "an error nobody recognises may have come after the request was sent"
    );
}

/// Gemini refuses a bad key with a 400 `INVALID_ARGUMENT` whose `ErrorInfo` says why: that is
/// an auth error, not a client error to be fixed in the request.
#[test]
fn gemini_invalid_key_is_an_auth_error() {
    let body = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#;
    let outcome = tollgate_core::classify::classify_response(
        http::StatusCode::BAD_REQUEST,
        &http::HeaderMap::new(),
        body,
        std::time::SystemTime::UNIX_EPOCH,
    );
    assert_eq!(outcome.kind, tollgate_core::OutcomeKind::AuthError);
    assert!(!outcome.is_retryable());
}

#[test]
fn a_refusal_that_names_its_window_carries_it() {
    let outcome = classify_response(
        StatusCode::TOO_MANY_REQUESTS,
        &HeaderMap::new(),
        GEMINI_RATE_LIMIT.as_bytes(),
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(outcome.rate_limit_window, Some(Duration::from_secs(60)));
    let openai = classify_response(
        StatusCode::TOO_MANY_REQUESTS,
        &HeaderMap::new(),
        br#"{"error":{"message":"Rate limit reached. Please try again in 50ms.","type":"requests"}}"#,
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(openai.rate_limit_window, None, "no window named");
    assert_eq!(openai.retry_after, Some(Duration::from_millis(50)));
}
