//! What Tollgate's criterion benches share, so that each bench says only what it compares.
//!
//! Every bench puts a layer around a service that answers at once and times `poll_ready`,
//! `call` and the response future. Those futures are ready at once, so each is polled a single
//! time with a no-op waker ([`now_or_never`], [`roundtrip`]): what is measured is the layers'
//! own work, not an executor's. A streamed body is read to its end the same way ([`drain`],
//! [`roundtrip_drained`]), since some layers give their permit back only there.
//!
//! A bench registers its variants once in a [`Comparison`], which hands them to criterion and
//! measures them for the two summaries the benches print around criterion's numbers:
//! allocations per call in steady state ([`allocations_per_op`]), and each variant's overhead
//! over the bare service against a peer's, from the medians of batches timed in turn
//! ([`Medians`]), so that a drift of the machine touches every variant alike.
//!
//! The crate is for `[dev-dependencies]` of benches only; it is never published.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, Response};
//! use tollgate_testkit::{chat_requests, roundtrip};
//!
//! let respond = |_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) };
//! let mut service = tower::service_fn(respond);
//! let mut requests = chat_requests();
//! let response = roundtrip(&mut service, requests());
//! assert_eq!(response.status(), 200);
//! ```

pub mod alloc;
pub mod comparison;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod poll;
pub mod redis;
pub mod requests;
pub mod timing;

pub use alloc::allocations_per_op;
pub use comparison::Comparison;
pub use poll::{drain, now_or_never, roundtrip, roundtrip_drained, runtime};
pub use requests::{chat_annotation, chat_requests, requests_with};
pub use timing::{Medians, median, nanos_per_op};
