//! Body types shared by the layers.
//!
//! [`ResponseBody`] is what a layer that can reject returns: either the inner
//! service's body, untouched and streaming, or a small fixed body (a
//! problem). [`BoxBody`] is the type-erased body the facade uses.
//! [`IdleTimeout`] bounds how long a body may wait for its next frame.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

mod idle;

pub use idle::{IdleTimedOut, IdleTimeout, IdleTimer};

pin_project! {
    /// A response body: the inner body, or a fixed body the layer wrote
    /// itself (a problem).
    ///
    /// The inner body streams untouched; `size_hint` and `is_end_stream`
    /// are forwarded.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A body of fixed bytes.
    pub fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: Kind::Full { data },
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full { data: None },
        }
    }

    /// The inner service's body, or this body when it is one the layer
    /// wrote itself. A stack that erases every layer's body into one type
    /// can hand the inner body on as it is, rather than box it again.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tollgate_core::body::ResponseBody;
    ///
    /// assert_eq!(ResponseBody::inner("upstream").into_inner().ok(), Some("upstream"));
    /// assert!(ResponseBody::<&str>::full(Bytes::from_static(b"problem")).into_inner().is_err());
    /// ```
    pub fn into_inner(self) -> Result<B, Self> {
        match self.kind {
            Kind::Inner { body } => Ok(body),
            kind @ Kind::Full { .. } => Err(Self { kind }),
        }
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseBody::Inner"),
            Kind::Full { data } => f
                .debug_struct("ResponseBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}

/// A type-erased, `Send` body of `Bytes` with a boxed error.
pub struct BoxBody {
    inner: Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send + 'static>>,
}

// === impl BoxBody ===

impl BoxBody {
    /// Boxes `body`, mapping its error into a [`BoxError`].
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: Box::pin(MapErr { body }),
        }
    }

    /// An empty body.
    #[must_use]
    pub fn empty() -> Self {
        Self::new(ResponseBody::<Self>::empty())
    }
}

impl Default for BoxBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl Body for BoxBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl fmt::Debug for BoxBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxBody")
    }
}

pin_project! {
    // Maps a body's error into a BoxError, so BoxBody needs no extra crate.
    struct MapErr<B> {
        #[pin]
        body: B,
    }
}

impl<B> Body for MapErr<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn full_body_is_exact_and_ends() {
        let body = ResponseBody::<Full<Bytes>>::full(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }

    #[tokio::test]
    async fn inner_body_is_forwarded() {
        let body = ResponseBody::inner(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(body.size_hint().exact(), Some(3));
        let boxed = BoxBody::new(body);
        assert_eq!(boxed.size_hint().exact(), Some(3));
        let bytes = boxed.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abc");
    }

    #[test]
    fn empty_body_is_end_of_stream() {
        let body = ResponseBody::<BoxBody>::empty();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }
}
