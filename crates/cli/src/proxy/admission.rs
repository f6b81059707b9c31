//! What one client may hold at once: its share of the requests in flight, and request body
//! bytes out of the gateway's budget.
//!
//! - **Requests in flight per gateway key.** Every client shares the stack's slots; without a
//!   share, one client that opens many slow streams (or stops reading them) holds them all.
//!   With `server.max_in_flight_per_key`, a key past its share gets a 429 at once.
//! - **Body bytes in flight.** Bodies are read whole before the stack sees them. Without a
//!   budget, 30 clients each sending 30 MiB − 1 byte and then nothing held 935 MB. Each frame
//!   read takes its bytes from `server.max_body_bytes_in_flight`; when the budget is spent,
//!   readers wait (the client's socket fills up and it stops sending), within the body-read
//!   timeout. The bytes come back when the request has its answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests in flight per gateway key (by the key's index).
#[derive(Debug)]
pub(crate) struct KeyShares {
    max: Box<[Option<usize>]>,
    in_flight: Box<[AtomicUsize]>,
}

/// A key's place in flight, given back when dropped.
#[derive(Debug)]
pub(crate) struct KeyPlace {
    shares: Arc<KeyShares>,
    key: usize,
}

impl Drop for KeyPlace {
    fn drop(&mut self) {
        self.shares.in_flight[self.key].fetch_sub(1, Ordering::AcqRel);
    }
}

impl KeyShares {
    /// A key for each cap: at most that many requests in flight (`None`: no cap).
    pub(crate) fn new(max: &[Option<usize>]) -> Self {
        Self {
            max: max.into(),
            in_flight: max.iter().map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// A place for key `key`, or `None` when it holds its whole share.
    pub(crate) fn take(self: &Arc<Self>, key: usize) -> Option<KeyPlace> {
        let counter = &self.in_flight[key];
        let max = self.max[key].unwrap_or(usize::MAX);
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(KeyPlace {
            shares: self.clone(),
            key,
        })
    }

    /// The cap of key `key`, if it has one.
    pub(crate) fn max(&self, key: usize) -> Option<usize> {
        self.max[key]
    }

    /// Key `key`'s requests in flight now.
    pub(crate) fn in_flight(&self, key: usize) -> usize {
        self.in_flight[key].load(Ordering::Acquire)
    }
}

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Larger than the per-request cap.
    TooLarge,
    /// Not all of it arrived within the body-read timeout.
    TooSlow(Duration),
    /// The connection failed mid-body.
    Broken(axum::Error),
}

/// The gateway's budget of request body bytes held at once.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    bytes: Arc<Semaphore>,
    max_body_bytes: usize,
    read_timeout: Duration,
}

impl BodyBudget {
    /// `in_flight` bytes for all bodies together, `max_body_bytes` for one, read within
    /// `read_timeout`. `max_body_bytes` must not exceed `in_flight` (the config checks it).
    pub(crate) fn new(in_flight: usize, max_body_bytes: usize, read_timeout: Duration) -> Self {
        debug_assert!(max_body_bytes <= in_flight);
        Self {
            bytes: Arc::new(Semaphore::new(in_flight.min(Semaphore::MAX_PERMITS))),
            max_body_bytes,
            read_timeout,
        }
    }

    /// The per-request cap.
    pub(crate) fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Reads `body` whole, holding its bytes in the budget until the permit is dropped.
    pub(crate) async fn read(
        &self,
        body: Body,
        declared: Option<u64>,
    ) -> Result<(Bytes, OwnedSemaphorePermit), BodyError> {
        if declared.is_some_and(|len| len > self.max_body_bytes as u64) {
            return Err(BodyError::TooLarge);
        }
        let mut read = std::pin::pin!(self.read_within(body));
        // Most bodies have arrived with their head: read them without arming a timer.
        if let Poll::Ready(result) =
            std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
        {
            return result;
        }
        tokio::time::timeout(self.read_timeout, read)
            .await
            .unwrap_or(Err(BodyError::TooSlow(self.read_timeout)))
    }

    async fn read_within(
        &self,
        mut body: Body,
    ) -> Result<(Bytes, OwnedSemaphorePermit), BodyError> {
        let mut held = self
            .bytes
            .clone()
            .acquire_many_owned(0)
            .await
            .expect("the budget is never closed");
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(BodyError::Broken)?.into_data() else {
                continue;
            };
            len += data.len();
            if len > self.max_body_bytes {
                return Err(BodyError::TooLarge);
            }
            // Fits in u32: len ≤ max_body_bytes ≤ the budget ≤ Semaphore::MAX_PERMITS.
            let need = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let permit = self
                .bytes
                .clone()
                .acquire_many_owned(need)
                .await
                .expect("the budget is never closed");
            held.merge(permit);
            chunks.push(data);
        }
        let bytes = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => {
                let mut whole = BytesMut::with_capacity(len);
                for chunk in chunks {
                    whole.extend_from_slice(&chunk);
                }
                whole.freeze()
            }
        };
        Ok((bytes, held))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::StreamBody;
    use tokio::time::Instant;

    use super::*;

    fn chunks(sizes: &[usize]) -> Body {
        let frames: Vec<Result<_, std::io::Error>> = sizes
            .iter()
            .map(|&n| Ok(http_body::Frame::data(Bytes::from(vec![b'x'; n]))))
            .collect();
        Body::new(StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_is_read_whole_and_its_bytes_are_held_until_dropped() {
        let budget = BodyBudget::new(100, 60, Duration::from_secs(30));
        let (bytes, held) = budget.read(chunks(&[20, 30]), None).await.unwrap();
        assert_eq!(bytes.len(), 50);
        assert_eq!(budget.bytes.available_permits(), 50);
        drop(held);
        assert_eq!(budget.bytes.available_permits(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_over_the_cap_is_refused_declared_or_not() {
        let budget = BodyBudget::new(100, 60, Duration::from_secs(30));
        assert!(matches!(
            budget.read(chunks(&[10]), Some(61)).await,
            Err(BodyError::TooLarge)
        ));
        assert!(matches!(
            budget.read(chunks(&[40, 40]), None).await,
            Err(BodyError::TooLarge)
        ));
        assert_eq!(budget.bytes.available_permits(), 100, "nothing kept");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_budget_a_reader_waits_and_gives_up_at_the_read_timeout() {
        let budget = BodyBudget::new(100, 60, Duration::from_secs(30));
        let (_a, held_a) = budget.read(chunks(&[60]), None).await.unwrap();
        let started = Instant::now();
        let result = budget.read(chunks(&[30, 30]), None).await;
        assert!(matches!(result, Err(BodyError::TooSlow(_))), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(
            budget.bytes.available_permits(),
            40,
            "the waiter gave back its bytes"
        );
        drop(held_a);
        assert_eq!(budget.bytes.available_permits(), 100);
    }

    #[test]
    fn a_key_holds_at_most_its_share() {
        let shares = Arc::new(KeyShares::new(&[Some(2), Some(2)]));
        let a1 = shares.take(0).unwrap();
        let _a2 = shares.take(0).unwrap();
        assert!(shares.take(0).is_none());
        let _b1 = shares.take(1).expect("another key is not affected");
        drop(a1);
        assert!(shares.take(0).is_some());
        let unlimited = Arc::new(KeyShares::new(&[None]));
        let places: Vec<_> = (0..1000).map(|_| unlimited.take(0).unwrap()).collect();
        assert_eq!(places.len(), 1000);
    }
}
