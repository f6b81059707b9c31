//! Single flight: identical requests in flight at once share one upstream call.
//!
//! The first cacheable request that misses starts a [`Flight`]: a task of its own makes the
//! call (see [`crate::call`]) and publishes the response head, each body frame and the end into
//! the flight. That request and every identical one that arrives while the flight records are
//! [`Waiter`]s: each reads the head and then the frames, from the first, at its own pace, so
//! every waiter of a stream streams. What the flight holds meanwhile is bounded (see
//! [`buffer`]): past `max_entry_bytes` it records no more and takes no more waiters, and the
//! call reads no further ahead of its slowest waiter than a small window.
//!
//! Because the call belongs to no waiter, a waiter that leaves — the first one included —
//! strands nobody, and no longer holds the others back. When the last waiter leaves before the
//! end, nobody wants the answer any more: the task is aborted, which drops the inner call as a
//! dropped future would.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http::response::Parts;
use http_body::Frame;
use tokio::task::AbortHandle;
use tollgate_core::BoxError;

use self::buffer::Buffer;
use crate::error::SharedCallFailed;
use crate::stats::Counters;

mod buffer;
mod waiters;

pub(crate) use self::waiters::{Flights, Waiter};

/// One upstream call and what it has answered so far.
pub(crate) struct Flight {
    state: Mutex<State>,
}

struct State {
    head: Option<Parts>,
    /// Whether the answer came from the second level rather than upstream.
    from_second_level: bool,
    /// The body frames held, and where each waiter is in them.
    buffer: Buffer,
    trailers: Option<HeaderMap>,
    end: Option<End>,
    failure: Option<Arc<BoxError>>,
    /// Waiters now.
    waiters: usize,
    /// Waiters ever: a failure goes to a lone waiter as it is.
    joined: usize,
    /// The call, waiting for the slowest waiter to make room.
    call: Option<Waker>,
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
    /// A flight that records up to `record_limit` bytes of body (`max_entry_bytes`), and
    /// counts what it holds in `counters`.
    pub(crate) fn new(record_limit: u64, counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                head: None,
                from_second_level: false,
                buffer: Buffer::new(record_limit, counters),
                trailers: None,
                end: None,
                failure: None,
                waiters: 0,
                joined: 0,
                call: None,
                task: None,
                abandoned: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new waiter, unless the call was abandoned, failed, or stopped recording (ended, or
    /// grew past what an entry may hold): a joiner reads from the first frame.
    pub(crate) fn join(self: &Arc<Self>) -> Option<WaiterId> {
        let mut state = self.lock();
        if state.abandoned || state.end == Some(End::Failed) {
            return None;
        }
        let id = state.buffer.join()?;
        state.waiters += 1;
        state.joined += 1;
        Some(WaiterId(id))
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
        state.buffer.leave(id.0);
        if state.waiters > 0 || state.end.is_some() {
            let call = state.call_to_wake();
            drop(state);
            if let Some(call) = call {
                call.wake();
            }
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

    /// Ready when the call may read the next upstream frame: while recording, or while the
    /// slowest waiter lags less than [`READ_AHEAD`](buffer::READ_AHEAD) bytes behind.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.buffer.has_room() {
            return Poll::Ready(());
        }
        match &mut state.call {
            Some(known) => known.clone_from(cx.waker()),
            None => state.call = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Publishes the response head.
    pub(crate) fn head(&self, head: Parts, from_second_level: bool) {
        self.publish(|state| {
            state.head = Some(head);
            state.from_second_level = from_second_level;
        });
    }

    /// Publishes a body frame; true when it stopped the recording (the answer is now too
    /// large to store, and the flight takes no more waiters).
    pub(crate) fn data(&self, data: Bytes) -> bool {
        self.publish(|state| state.buffer.push(data))
    }

    /// Publishes the trailers.
    pub(crate) fn trailers(&self, trailers: HeaderMap) {
        self.publish(|state| state.trailers = Some(trailers));
    }

    /// The body frames and the trailers, to store; none when the recording stopped.
    pub(crate) fn recorded(&self) -> Option<(Vec<Bytes>, Option<HeaderMap>)> {
        let state = self.lock();
        let frames = state.buffer.recorded()?;
        Some((frames, state.trailers.clone()))
    }

    /// Publishes the end of the body. Nobody joins any more (the flight has left the map, and
    /// the answer is stored or will never be), so each frame is freed once every waiter has
    /// read it.
    pub(crate) fn complete(&self) {
        self.publish(|state| {
            state.end = Some(End::Complete);
            state.buffer.stop_recording();
        });
    }

    /// Publishes a failure: of the call (no head), or of the body (after the frames so far).
    pub(crate) fn fail(&self, error: BoxError) {
        self.publish(|state| {
            if state.end.is_none() {
                state.end = Some(End::Failed);
                state.failure = Some(Arc::new(error));
            }
            state.buffer.stop_recording();
        });
    }

    fn publish<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let (changed, wakers) = {
            let mut state = self.lock();
            let changed = change(&mut state);
            let wakers: Vec<Waker> = state
                .buffer
                .readers()
                .filter_map(|reader| reader.waker.take())
                .collect();
            (changed, wakers)
        };
        for waker in wakers {
            waker.wake();
        }
        changed
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

    /// The frame after those `id` has read.
    pub(crate) fn poll_frame(
        &self,
        id: WaiterId,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = self.lock();
        if state.buffer.reader(id.0).done {
            return Poll::Ready(None);
        }
        if let Some(data) = state.buffer.next(id.0) {
            let call = state.call_to_wake();
            drop(state);
            if let Some(call) = call {
                call.wake();
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match state.end {
            Some(End::Complete) => {
                state.buffer.reader(id.0).done = true;
                let trailers = state.trailers.clone();
                Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
            }
            Some(End::Failed) => {
                state.buffer.reader(id.0).done = true;
                Poll::Ready(Some(Err(state.error())))
            }
            None => {
                state.register(id, cx.waker());
                Poll::Pending
            }
        }
    }

    /// Whether `id` has read everything there will be.
    pub(crate) fn is_end(&self, id: WaiterId) -> bool {
        let mut state = self.lock();
        let state = &mut *state;
        state.buffer.reader(id.0).done
            || (state.end == Some(End::Complete)
                && state.trailers.is_none()
                && state.buffer.has_read_all(id.0))
    }
}

impl State {
    fn register(&mut self, id: WaiterId, waker: &Waker) {
        match &mut self.buffer.reader(id.0).waker {
            Some(known) => known.clone_from(waker),
            known @ None => *known = Some(waker.clone()),
        }
    }

    /// The call, if it waits for room and there is some now.
    fn call_to_wake(&mut self) -> Option<Waker> {
        if self.call.is_some() && self.buffer.has_room() {
            self.call.take()
        } else {
            None
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
            .field("recording", &state.buffer.is_recording())
            .field("held", &state.buffer.held())
            .field("end", &state.end)
            .finish_non_exhaustive()
    }
}

/// Which waiter of a flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaiterId(usize);

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;

    use super::buffer::READ_AHEAD;
    use super::*;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    /// A flight that records up to `record_limit` bytes.
    fn new_flight(record_limit: u64) -> Arc<Flight> {
        Flight::new(record_limit, Arc::default())
    }

    #[test]
    fn every_waiter_reads_every_frame_from_the_first() {
        let flight = new_flight(u64::MAX);
        let first = flight.join().unwrap();
        flight.head(http::Response::new(()).into_parts().0, false);
        flight.data(Bytes::from_static(b"a"));
        let second = flight.join().unwrap();
        flight.data(Bytes::from_static(b"b"));
        flight.complete();
        for id in [first, second] {
            assert!(flight.poll_head(id, &mut cx()).is_ready());
            let mut read = Vec::new();
            while let Poll::Ready(Some(frame)) = flight.poll_frame(id, &mut cx()) {
                read.push(frame.unwrap().into_data().unwrap());
            }
            assert_eq!(read, [&b"a"[..], b"b"]);
            assert!(flight.is_end(id));
        }
    }

    #[test]
    fn a_lone_waiter_gets_the_error_itself_and_many_share_it() {
        let boom = || Box::new(std::io::Error::other("boom"));
        let alone = new_flight(u64::MAX);
        let id = alone.join().unwrap();
        alone.fail(boom());
        let Poll::Ready(Err(error)) = alone.poll_head(id, &mut cx()) else {
            panic!("failed")
        };
        assert!(error.is::<std::io::Error>());

        let shared = new_flight(u64::MAX);
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
        let flight = new_flight(u64::MAX);
        let (a, b) = (flight.join().unwrap(), flight.join().unwrap());
        assert!(!flight.leave(a));
        assert!(flight.leave(b));
        assert!(flight.join().is_none());

        let finished = new_flight(u64::MAX);
        let a = finished.join().unwrap();
        finished.complete();
        assert!(!finished.leave(a), "a finished call is not abandoned");
    }

    #[test]
    fn past_the_record_limit_nobody_joins_and_the_call_waits_for_the_slowest() {
        let flight = new_flight(1024);
        let (slow, fast) = (flight.join().unwrap(), flight.join().unwrap());
        flight.head(http::Response::new(()).into_parts().0, false);
        let mut pushed = 0;
        while flight.poll_room(&mut cx()).is_ready() {
            let stopped = flight.data(Bytes::from(vec![b'x'; 1024]));
            assert_eq!(stopped, pushed == 1);
            pushed += 1;
            while let Poll::Ready(Some(_)) = flight.poll_frame(fast, &mut cx()) {}
        }
        assert_eq!(pushed, READ_AHEAD / 1024, "the window past the slow waiter");
        assert!(flight.join().is_none(), "too large to store: nobody joins");
        assert!(flight.recorded().is_none());

        let (woken, waker) = counting_waker();
        assert!(
            flight
                .poll_room(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert!(!flight.leave(slow));
        assert_eq!(woken.load(Ordering::Relaxed), 1, "leaving makes room");
        assert!(flight.poll_room(&mut cx()).is_ready());
    }

    fn counting_waker() -> (Arc<AtomicUsize>, Waker) {
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(AtomicUsize::new(0));
        (count.clone(), Waker::from(Arc::new(Count(count))))
    }
}
