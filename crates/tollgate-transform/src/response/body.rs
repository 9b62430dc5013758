//! [`TransformedBody`]: the response body of [`ResponseTransform`](super::ResponseTransform).

use std::{
    collections::VecDeque,
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a transformed response: the upstream body streaming
    /// untouched, or bytes the layer holds (a rewritten body, a problem),
    /// possibly followed by the rest of the upstream body (a body the layer
    /// began to read and then passed through).
    ///
    /// `size_hint` and `is_end_stream` are forwarded or exact. See the
    /// [crate docs](crate) for an example.
    pub struct TransformedBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        /// The upstream body, streaming.
        Stream { #[pin] body: B },
        /// Held bytes, then trailers, then the rest of the upstream body.
        /// Boxed: a streaming response, the common case, then moves a
        /// body no larger than the upstream's (the held state is about
        /// 140 bytes, and every move of the response would copy it).
        Held { held: Box<Held<B>> },
    }
}

/// What a [`Kind::Held`] body still has to give.
struct Held<B> {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Pin<Box<B>>>,
}

// === impl TransformedBody ===

impl<B> TransformedBody<B> {
    /// The upstream body, untouched.
    pub(crate) fn stream(body: B) -> Self {
        Self {
            kind: Kind::Stream { body },
        }
    }

    /// A complete body of `data`, then `trailers`.
    pub(crate) fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        let chunks = if data.is_empty() {
            VecDeque::new()
        } else {
            VecDeque::from([data])
        };
        Self::held(chunks, trailers, None)
    }

    /// The chunks already read, then the rest of `body` (or `trailers`
    /// when the body had ended).
    pub(crate) fn replay(
        chunks: Vec<Bytes>,
        trailers: Option<HeaderMap>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        Self::held(chunks.into(), trailers, rest)
    }

    fn held(
        chunks: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        Self {
            kind: Kind::Held {
                held: Box::new(Held {
                    chunks,
                    trailers,
                    rest,
                }),
            },
        }
    }
}

impl<B> Body for TransformedBody<B>
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
            KindProj::Stream { body } => body.poll_frame(cx),
            // Inline on purpose: out of line, this arm saved a streamed
            // frame 3 instructions but cost it about 4.6 ns on the wall
            // clock (docs/benchmarks.md, transforms round 4).
            KindProj::Held { held } => {
                let Held {
                    chunks,
                    trailers,
                    rest,
                } = &mut **held;
                if let Some(chunk) = chunks.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if let Some(trailers) = trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                match rest {
                    Some(body) => body.as_mut().poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stream { body } => body.is_end_stream(),
            Kind::Held { held } => {
                let Held {
                    chunks,
                    trailers,
                    rest,
                } = &**held;
                chunks.is_empty()
                    && trailers.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stream { body } => body.size_hint(),
            Kind::Held { held } => {
                let Held { chunks, rest, .. } = &**held;
                let held: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                match rest {
                    None => SizeHint::with_exact(held),
                    Some(body) => {
                        let inner = body.size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(inner.lower().saturating_add(held));
                        if let Some(upper) = inner.upper() {
                            hint.set_upper(upper.saturating_add(held));
                        }
                        hint
                    }
                }
            }
        }
    }
}

impl<B> fmt::Debug for TransformedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Stream { .. } => f.write_str("TransformedBody::Stream"),
            Kind::Held { held } => f
                .debug_struct("TransformedBody::Held")
                .field("len", &held.chunks.iter().map(Bytes::len).sum::<usize>())
                .field("rest", &held.rest.is_some())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    #[tokio::test]
    async fn full_is_exact_and_replay_chains_the_rest() {
        let body = TransformedBody::<Full<Bytes>>::full(Bytes::from_static(b"abc"), None);
        assert_eq!(body.size_hint().exact(), Some(3));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abc");
        assert!(TransformedBody::<Full<Bytes>>::full(Bytes::new(), None).is_end_stream());

        let rest = Full::new(Bytes::from_static(b"def"));
        let body = TransformedBody::replay(
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")],
            None,
            Some(Box::pin(rest)),
        );
        assert_eq!(body.size_hint().exact(), Some(6));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abcdef");
    }

    #[tokio::test]
    async fn trailers_follow_the_data() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "1".parse().unwrap());
        let body = TransformedBody::<
            StreamBody<futures_util::stream::Empty<Result<Frame<Bytes>, std::io::Error>>>,
        >::full(Bytes::from_static(b"x"), Some(trailers));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-checksum"], "1");
    }
}
