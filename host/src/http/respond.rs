//! What the proxy sends clients: the body type (an upstream's streamed
//! body, or a small one made here), and the short plain-text answers for
//! everything the proxy decides itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

/// A response body toward the client. `done` runs when it ends or is
/// dropped (the request's access-log line and metrics, with the bytes
/// actually sent).
pub(crate) struct Body {
    inner: Inner,
    sent: u64,
    done: Option<Box<dyn FnOnce(u64) + Send>>,
    /// Held until the body is dropped (a route's request slot).
    kept: Option<Box<dyn std::any::Any + Send>>,
}

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

impl Body {
    pub(crate) fn upstream(body: Incoming) -> Self {
        Self {
            inner: Inner::Upstream(body),
            sent: 0,
            done: None,
            kept: None,
        }
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            sent: 0,
            done: None,
            kept: None,
        }
    }

    /// Keeps `guard` alive for as long as the body is being sent.
    pub(crate) fn keep(&mut self, guard: impl Send + 'static) {
        self.kept = Some(Box::new(guard));
    }

    /// Runs `f` with the body bytes sent once the body ends or is dropped.
    pub(crate) fn on_done(&mut self, f: impl FnOnce(u64) + Send + 'static) {
        self.done = Some(Box::new(f));
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.sent);
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// A short plain-text answer made by the proxy: the status's reason
/// phrase, nothing internal.
pub(crate) fn plain(status: StatusCode) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut r = Response::new(Body::full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The label counted and logged for an answer the proxy made because
/// something failed, by status.
pub(crate) fn error_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 => "bad-request",
        404 => "no-route",
        408 => "header-timeout",
        413 => "body-too-large",
        414 => "uri-too-long",
        421 => "misdirected",
        431 => "headers-too-large",
        502 => "upstream-refused",
        503 => "route-limit",
        504 => "upstream-timeout",
        _ => "error",
    }
}
