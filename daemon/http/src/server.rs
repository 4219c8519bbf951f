//! Serves HTTP/1 connections with the bounds a local service needs against slow or idle clients:
//! a cap on open connections, a deadline for each request's headers (and for an idle keep-alive
//! connection's next request), and a deadline for each request's whole body.
//!
//! axum's own `serve` sets no timer, so hyper's header timeout never fires there and a client
//! that sends half a request holds its connection and task for as long as it likes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::listen::PeerAddr;

/// How long clients may take, and how many may be connected at once.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// From the first byte a connection is read for (its opening, or the end of its last
    /// response) to the end of a request's headers.
    pub header: Duration,
    /// From the end of the headers to the end of the body.
    pub body: Duration,
    /// Open connections, all listeners together; further ones wait in the listen backlog
    /// until one closes.
    pub connections: usize,
}

/// Accepts connections on `listener` until it fails, each served on a task of its own.
/// `slots` holds one permit per connection that may be open, shared by all listeners.
pub async fn serve<L>(mut listener: L, router: Router, bounds: Bounds, slots: Arc<Semaphore>)
where
    L: Listener<Addr = PeerAddr>,
{
    loop {
        // Taken before accepting, so that a full house leaves clients in the kernel's backlog
        // instead of holding fds here.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (io, addr) = listener.accept().await;
        let router = router.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req =
                        req.map(|body| Body::new(Deadline::new(Body::new(body), bounds.body)));
                    req.extensions_mut().insert(ConnectInfo(addr.clone()));
                    router.clone().oneshot(req)
                });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(bounds.header)
                .keep_alive(true);
            if let Err(e) = http.serve_connection(TokioIo::new(io), service).await {
                // Timeouts and resets are the client's doing; nothing to act on here.
                log::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
}

/// The error a body gives when its deadline passes first.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// A request body that fails once its deadline has passed.
struct Deadline {
    inner: Body,
    limit: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl Deadline {
    fn new(inner: Body, limit: Duration) -> Self {
        Deadline {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (or what caused it) is a body's deadline passing.
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(t) = e.downcast_ref::<BodyTimedOut>() {
            return Some(t.0);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_at_its_deadline_naming_it() {
        let first = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"{\"a\":")))
        });
        let stalled = first.chain(futures_util::stream::pending());
        let limit = Duration::from_secs(5);
        let body = Deadline::new(Body::new(http_body_util::StreamBody::new(stalled)), limit);
        let err = Body::new(body).collect().await.expect_err("stalled");
        assert_eq!(timed_out(&err), Some(limit), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_ends_in_time_is_whole() {
        let limit = Duration::from_secs(5);
        let body = Body::new(Deadline::new(Body::from("{}"), limit));
        let bytes = body.collect().await.expect("whole").to_bytes();
        assert_eq!(&bytes[..], b"{}");
    }
}
