//! Runs `N` calls through the standard stack (or the bare service) on its happy path, for
//! counting instructions per call with callgrind: `scripts/stack-instructions` runs it twice and
//! divides the difference, so the setup cancels out. Counts, unlike times, repeat exactly from
//! run to run whatever else the machine is doing.
//!
//! `cargo run --release -p tollgate --example stack_calls -- <bare|stack> <N>`
//!
//! The call is the one `benches/stack.rs` measures: a 300-byte chat completion with an API key,
//! not cacheable, answered at once with a small completion whose body is read to its end.

use std::convert::Infallible;

use tollgate::{LlmStack, StackConfig};
use tollgate_testkit::poll::roundtrip_drained;
use tollgate_testkit::requests::{SMALL_COMPLETION, chat_completion_request, small_completion};
use tollgate_testkit::runtime;
use tower::{ServiceBuilder, service_fn};

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "stack".to_owned());
    let calls: usize = args
        .next()
        .map(|n| n.parse().expect("N is a number of calls"))
        .unwrap_or(10_000);
    let rt = runtime();
    let _guard = rt.enter();
    let mut bytes = 0;
    match variant.as_str() {
        "bare" => {
            let mut bare = service_fn(small_completion);
            for _ in 0..calls {
                bytes += roundtrip_drained(&mut bare, chat_completion_request());
            }
        }
        "stack" => {
            let config = StackConfig::from_toml(
                "preset = \"balanced\"\nmax_concurrent_requests = 64\nseed = 1",
            )
            .expect("a valid config");
            let client = ServiceBuilder::new()
                .map_err(|never: Infallible| -> tollgate::core::BoxError { match never {} })
                .service(service_fn(small_completion));
            let (mut stack, _handle) = LlmStack::new(&config)
                .expect("a valid config")
                .service(client);
            for _ in 0..calls {
                bytes += roundtrip_drained(&mut stack, chat_completion_request());
            }
        }
        other => panic!("unknown variant {other:?}: bare or stack"),
    }
    assert_eq!(
        bytes,
        calls * SMALL_COMPLETION.len(),
        "every answer read whole"
    );
    println!("{variant}: {calls} calls");
}
