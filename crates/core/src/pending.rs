//! [`PendingCall`]: a call a layer's future makes later, once it has its permit.

use std::task::{Context, Poll, ready};

use tower::Service;

/// A call not made yet: the inner service that will make it and its request.
///
/// A layer that waits for capacity in its response future (a permit, a rate-limit turn)
/// keeps one in each state before the call, and the call's future in the state after it, so
/// that the two share the space: these futures are moved by every layer above, and a service
/// with a request is a few hundred bytes.
#[derive(Debug)]
pub struct PendingCall<S, R>(Option<(S, R)>);

impl<S, R> PendingCall<S, R> {
    /// `service` will make the call with `request`.
    pub const fn new(service: S, request: R) -> Self {
        Self(Some((service, request)))
    }

    /// Moves the call out, to carry it into the next state; this one is left spent.
    pub const fn take(&mut self) -> Self {
        Self(self.0.take())
    }
}

impl<S: Service<R>, R> PendingCall<S, R> {
    /// Drives the service until it is ready, then makes the call and returns its future; an
    /// error from `poll_ready` is returned as is, and the request is dropped with the service.
    ///
    /// # Panics
    ///
    /// When the call was already made or taken.
    pub fn poll_call(&mut self, cx: &mut Context<'_>) -> Poll<Result<S::Future, S::Error>> {
        let (service, _) = self.0.as_mut().expect("the call was already made");
        ready!(service.poll_ready(cx))?;
        let (mut service, request) = self.0.take().expect("the call was already made");
        Poll::Ready(Ok(service.call(request)))
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use tower_test::mock;

    use super::PendingCall;

    #[tokio::test]
    async fn the_call_waits_for_the_service_then_is_made_once() {
        let (service, mut handle) = mock::pair::<u32, u32>();
        handle.allow(0);
        let mut pending = PendingCall::new(service, 7);
        std::future::poll_fn(|cx| {
            assert!(pending.poll_call(cx).is_pending(), "not ready: no call yet");
            Poll::Ready(())
        })
        .await;
        handle.allow(1);
        let future = std::future::poll_fn(|cx| pending.poll_call(cx))
            .await
            .unwrap();
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!(request, 7);
        respond.send_response(8);
        assert_eq!(future.await.unwrap(), 8);
    }

    #[tokio::test]
    #[should_panic(expected = "the call was already made")]
    async fn a_taken_call_is_spent() {
        let (service, _handle) = mock::pair::<u32, u32>();
        let mut pending = PendingCall::new(service, 7);
        let _moved = pending.take();
        std::future::poll_fn(|cx| pending.poll_call(cx)).await.ok();
    }
}
