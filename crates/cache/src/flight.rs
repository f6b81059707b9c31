//! Single flight: identical requests in flight at once share one upstream call.
//!
//! The first cacheable request that misses starts a [`Flight`]: a task of its own makes the
//! call (see [`crate::call`]) and publishes the response head, each body frame and the end into
//! the flight. That request and every identical one that arrives while the flight runs are
//! [`Waiter`]s: each reads the head and then the frames, from the first, at its own pace, so
//! every waiter of a stream streams.
//!
//! Because the call belongs to no waiter, a waiter that leaves — the first one included —
//! strands nobody. When the last waiter leaves before the end, nobody wants the answer any
//! more: the task is aborted, which drops the inner call as a dropped future would.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http::response::Parts;
use http_body::Frame;
use tokio::task::AbortHandle;
use tollgate_core::BoxError;

use crate::error::SharedCallFailed;

mod waiters;

pub(crate) use self::waiters::{Flights, Waiter};

/// One upstream call and what it has answered so far.
pub(crate) struct Flight {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    head: Option<Parts>,
    /// Whether the answer came from the second level rather than upstream.
    from_second_level: bool,
    frames: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    end: Option<End>,
    failure: Option<Arc<BoxError>>,
    /// Waiters now.
    waiters: usize,
    /// Waiters ever: a failure goes to a lone waiter as it is.
    joined: usize,
    next_id: u64,
    wakers: Vec<(u64, Waker)>,
    task: Option<AbortHandle>,
    /// Every waiter left before the end: the call was cancelled.
    abandoned: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Complete,
    Failed,
}

impl Flight {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new waiter, unless the call was already abandoned.
    pub(crate) fn join(self: &Arc<Self>) -> Option<WaiterId> {
        let mut state = self.lock();
        if state.abandoned || state.end == Some(End::Failed) {
            return None;
        }
        state.waiters += 1;
        state.joined += 1;
        state.next_id += 1;
        Some(WaiterId(state.next_id))
    }

    /// The task making the call, to abort if every waiter leaves.
    pub(crate) fn set_task(&self, task: AbortHandle) {
        let mut state = self.lock();
        if state.abandoned {
            task.abort();
        } else {
            state.task = Some(task);
        }
    }

    /// `id` leaves; true when it was the last one before the end (the call is then aborted
    /// and the flight must be forgotten).
    pub(crate) fn leave(&self, id: WaiterId) -> bool {
        let mut state = self.lock();
        state.waiters -= 1;
        state.wakers.retain(|(waker_id, _)| *waker_id != id.0);
        if state.waiters > 0 || state.end.is_some() {
            return false;
        }
        state.abandoned = true;
        let task = state.task.take();
        drop(state);
        if let Some(task) = task {
            task.abort();
        }
        true
    }

    /// Publishes the response head.
    pub(crate) fn head(&self, head: Parts, from_second_level: bool) {
        self.publish(|state| {
            state.head = Some(head);
            state.from_second_level = from_second_level;
        });
    }

    /// Publishes a body frame.
    pub(crate) fn data(&self, data: Bytes) {
        self.publish(|state| state.frames.push(data));
    }

    /// Publishes the trailers.
    pub(crate) fn trailers(&self, trailers: HeaderMap) {
        self.publish(|state| state.trailers = Some(trailers));
    }

    /// The body frames so far, to store.
    pub(crate) fn frames(&self) -> Vec<Bytes> {
        self.lock().frames.clone()
    }

    /// The trailers, if any came.
    pub(crate) fn recorded_trailers(&self) -> Option<HeaderMap> {
        self.lock().trailers.clone()
    }

    /// Publishes the end of the body.
    pub(crate) fn complete(&self) {
        self.publish(|state| state.end = Some(End::Complete));
    }

    /// Publishes a failure: of the call (no head), or of the body (after the frames so far).
    pub(crate) fn fail(&self, error: BoxError) {
        self.publish(|state| {
            if state.end.is_none() {
                state.end = Some(End::Failed);
                state.failure = Some(Arc::new(error));
            }
        });
    }

    fn publish(&self, change: impl FnOnce(&mut State)) {
        let wakers = {
            let mut state = self.lock();
            change(&mut state);
            std::mem::take(&mut state.wakers)
        };
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// The head, once it has come (and whether it came from the second level).
    pub(crate) fn poll_head(
        &self,
        id: WaiterId,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Parts, bool), BoxError>> {
        let mut state = self.lock();
        if let Some(head) = &state.head {
            return Poll::Ready(Ok((head.clone(), state.from_second_level)));
        }
        if state.end == Some(End::Failed) {
            return Poll::Ready(Err(state.error()));
        }
        state.register(id, cx.waker());
        Poll::Pending
    }

    /// The frame after those `cursor` has read.
    pub(crate) fn poll_frame(
        &self,
        id: WaiterId,
        cursor: &mut Cursor,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if cursor.done {
            return Poll::Ready(None);
        }
        let mut state = self.lock();
        if let Some(data) = state.frames.get(cursor.next) {
            cursor.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        match state.end {
            Some(End::Complete) => {
                cursor.done = true;
                let trailers = state.trailers.clone();
                Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
            }
            Some(End::Failed) => {
                cursor.done = true;
                Poll::Ready(Some(Err(state.error())))
            }
            None => {
                state.register(id, cx.waker());
                Poll::Pending
            }
        }
    }

    /// Whether `cursor` has read everything there will be.
    pub(crate) fn is_end(&self, cursor: &Cursor) -> bool {
        cursor.done || {
            let state = self.lock();
            state.end == Some(End::Complete)
                && state.trailers.is_none()
                && cursor.next == state.frames.len()
        }
    }
}

impl State {
    fn register(&mut self, id: WaiterId, waker: &Waker) {
        match self
            .wakers
            .iter_mut()
            .find(|(waker_id, _)| *waker_id == id.0)
        {
            Some((_, known)) => known.clone_from(waker),
            None => self.wakers.push((id.0, waker.clone())),
        }
    }

    /// The failure for one waiter: as it is when nobody else ever waited for it, shared
    /// otherwise.
    fn error(&mut self) -> BoxError {
        let Some(failure) = self.failure.take() else {
            return Box::new(crate::error::CallLost);
        };
        if self.joined == 1 {
            match Arc::try_unwrap(failure) {
                Ok(error) => return error,
                Err(shared) => self.failure = Some(shared),
            }
        } else {
            self.failure = Some(failure);
        }
        let shared = self.failure.clone().expect("kept above");
        Box::new(SharedCallFailed::new(shared))
    }
}

impl fmt::Debug for Flight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Flight")
            .field("waiters", &state.waiters)
            .field("frames", &state.frames.len())
            .field("end", &state.end)
            .finish_non_exhaustive()
    }
}

/// Which waiter of a flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaiterId(u64);

/// How far a waiter has read the body.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cursor {
    next: usize,
    done: bool,
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn every_waiter_reads_every_frame_from_the_first() {
        let flight = Flight::new();
        let first = flight.join().unwrap();
        flight.head(http::Response::new(()).into_parts().0, false);
        flight.data(Bytes::from_static(b"a"));
        let second = flight.join().unwrap();
        flight.data(Bytes::from_static(b"b"));
        flight.complete();
        for id in [first, second] {
            let mut cursor = Cursor::default();
            assert!(flight.poll_head(id, &mut cx()).is_ready());
            let mut read = Vec::new();
            while let Poll::Ready(Some(frame)) = flight.poll_frame(id, &mut cursor, &mut cx()) {
                read.push(frame.unwrap().into_data().unwrap());
            }
            assert_eq!(read, [&b"a"[..], b"b"]);
            assert!(flight.is_end(&cursor));
        }
    }

    #[test]
    fn a_lone_waiter_gets_the_error_itself_and_many_share_it() {
        let boom = || Box::new(std::io::Error::other("boom"));
        let alone = Flight::new();
        let id = alone.join().unwrap();
        alone.fail(boom());
        let Poll::Ready(Err(error)) = alone.poll_head(id, &mut cx()) else {
            panic!("failed")
        };
        assert!(error.is::<std::io::Error>());

        let shared = Flight::new();
        let ids = [shared.join().unwrap(), shared.join().unwrap()];
        shared.fail(boom());
        for id in ids {
            let Poll::Ready(Err(error)) = shared.poll_head(id, &mut cx()) else {
                panic!("failed")
            };
            let failed = error.downcast_ref::<SharedCallFailed>().unwrap();
            assert!(
                std::error::Error::source(failed)
                    .unwrap()
                    .is::<std::io::Error>()
            );
        }
        assert!(shared.join().is_none(), "a failed flight takes nobody in");
    }

    #[test]
    fn the_last_waiter_to_leave_abandons_the_call() {
        let flight = Flight::new();
        let (a, b) = (flight.join().unwrap(), flight.join().unwrap());
        assert!(!flight.leave(a));
        assert!(flight.leave(b));
        assert!(flight.join().is_none());

        let finished = Flight::new();
        let a = finished.join().unwrap();
        finished.complete();
        assert!(!finished.leave(a), "a finished call is not abandoned");
    }
}
