//! Problem bodies for the requests hyper refuses before the router sees
//! them.
//!
//! hyper answers a request it cannot parse (bad request line, bad header,
//! header block too large, URI too long) itself, with a bare status and no
//! body, then closes the connection; it has no hook to change that answer.
//! This wrapper around the connection's socket recognises exactly that
//! answer, byte for byte, and writes an RFC 9457 problem in its place, so
//! every 4xx the gateway sends is problem+json.
//!
//! The answer is recognised only when one write is exactly
//! `HTTP/1.1 {400|414|431} {reason}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {date}\r\n\r\n`.
//! An upstream response that produces those very bytes (an empty 400, 414
//! or 431 on a closing connection) would get the same problem body, with
//! the same status; nothing else can match. When hyper packs the answer
//! into the same write as a pipelined response before it, it goes out
//! bare, as hyper wrote it.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::StatusCode;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tollgate_core::{Problem, problem::CONTENT_TYPE_PROBLEM};

const CLOSE_HEADERS: &[u8] = b"connection: close\r\ncontent-length: 0\r\ndate: ";
/// `Sat, 28 Nov 2026 03:44:49 GMT`
const DATE_LEN: usize = 29;

pin_project! {
    /// A socket whose hyper parse-error answers become problems.
    pub(crate) struct ProblemOnParseError<T> {
        #[pin]
        inner: T,
        // The replacement still to be written.
        pending: Bytes,
    }
}

impl<T> ProblemOnParseError<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
        }
    }
}

/// The replacement for `buf` when it is exactly hyper's parse-error answer.
fn replacement(buf: &[u8]) -> Option<Bytes> {
    // Fast exit for every other write: a 4xx status line first.
    if buf.len() > 160 || !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let (status, problem) = [
        (
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            StatusCode::BAD_REQUEST,
        ),
        (
            &b"HTTP/1.1 414 URI Too Long\r\n"[..],
            StatusCode::URI_TOO_LONG,
        ),
        (
            &b"HTTP/1.1 431 Request Header Fields Too Large\r\n"[..],
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
    ]
    .into_iter()
    .find(|(line, _)| buf.starts_with(line))?;
    let rest = buf[status.len()..].strip_prefix(CLOSE_HEADERS)?;
    let date = rest.strip_suffix(b"\r\n\r\n")?;
    if date.len() != DATE_LEN || !date.is_ascii() {
        return None;
    }
    let body = match problem {
        StatusCode::URI_TOO_LONG => {
            Problem::uri_too_long().detail("the request target is too long")
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            Problem::headers_too_large().detail("the request header block is too large")
        }
        _ => Problem::bad_request().detail("the request is not valid HTTP/1.1"),
    };
    let json = serde_json::to_vec(&body.to_json()).ok()?;
    let mut out = Vec::with_capacity(status.len() + 160 + json.len());
    out.extend_from_slice(status);
    out.extend_from_slice(b"content-type: ");
    out.extend_from_slice(CONTENT_TYPE_PROBLEM.as_bytes());
    out.extend_from_slice(b"\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: ");
    out.extend_from_slice(json.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&json);
    Some(Bytes::from(out))
}

impl<T: AsyncWrite> ProblemOnParseError<T> {
    /// Writes what is left of a replacement.
    fn poll_pending(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        while !this.pending.is_empty() {
            let n = ready!(this.inner.as_mut().poll_write(cx, this.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead> AsyncRead for ProblemOnParseError<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for ProblemOnParseError<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.as_mut().poll_pending(cx))?;
        if let Some(out) = replacement(buf) {
            *self.as_mut().project().pending = out;
            // The replacement is owed now; hyper's bytes count as written.
            // Whatever is not written here goes out on the next write,
            // flush or shutdown.
            if let Poll::Ready(Err(err)) = self.as_mut().poll_pending(cx) {
                return Poll::Ready(Err(err));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.as_mut().poll_pending(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total <= 160 && bufs.first().is_some_and(|b| b.starts_with(b"HTTP/1.1 4")) {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if let Some(out) = replacement(&joined) {
                *self.as_mut().project().pending = out;
                if let Poll::Ready(Err(err)) = self.as_mut().poll_pending(cx) {
                    return Poll::Ready(Err(err));
                }
                return Poll::Ready(Ok(total));
            }
        }
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_pending(cx))?;
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_pending(cx))?;
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_400: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sat, 28 Nov 2026 03:44:49 GMT\r\n\r\n";

    #[test]
    fn hypers_answer_becomes_a_problem() {
        let out = replacement(HYPER_400).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains("connection: close"));
        assert!(head.contains("date: Sat, 28 Nov 2026 03:44:49 GMT"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["status"], 400);
        assert_eq!(json["type"], tollgate_core::problem::BAD_REQUEST);
    }

    #[test]
    fn other_writes_pass() {
        for buf in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Sat, 28 Nov 2026 03:44:49 GMT\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sat, 28 Nov 2026 03:44:49 GMT\r\n\r\nx",
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sat, 28 Nov 2026 03:44:49 GMT\r\n\r\n",
            b"some body bytes",
        ] {
            assert!(replacement(buf).is_none(), "{}", String::from_utf8_lossy(buf));
        }
    }

    #[tokio::test]
    async fn the_replacement_is_written_whole() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(16);
        let mut wrapped = ProblemOnParseError::new(server);
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        wrapped.write_all(HYPER_400).await.unwrap();
        wrapped.shutdown().await.unwrap();
        drop(wrapped);
        let all = reader.await.unwrap();
        assert_eq!(all, replacement(HYPER_400).unwrap());
    }
}
