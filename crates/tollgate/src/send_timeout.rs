//! The send timeout: a client that stops reading what the gateway writes
//! to it is disconnected once a write has waited that long (nginx's
//! `send_timeout`).
//!
//! Neither hyper nor tokio bounds how long a write may wait for the
//! client's socket to drain, so the connection's socket is wrapped here,
//! with the same [`IdleTimer`] that bounds a body's waits. A write that
//! completes costs a branch; only a write that has to wait makes a timer.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tollgate_core::body::IdleTimer;

pin_project! {
    /// A socket whose writes fail with `TimedOut` after waiting `timeout`
    /// for the peer to read.
    pub(crate) struct SendTimeout<T> {
        #[pin]
        inner: T,
        timeout: Duration,
        // Made by the first write that has to wait. Boxed, so that the
        // socket stays `Unpin`, as hyper's upgrades need; only a
        // connection whose writes wait pays for it.
        timer: Option<Pin<Box<IdleTimer>>>,
    }
}

impl<T> SendTimeout<T> {
    pub(crate) fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
        }
    }
}

/// `result` of a write, bounded: a wait longer than `timeout` is an error.
fn bounded<R>(
    timer: &mut Option<Pin<Box<IdleTimer>>>,
    timeout: Duration,
    cx: &mut Context<'_>,
    result: Poll<io::Result<R>>,
) -> Poll<io::Result<R>> {
    if result.is_ready() {
        if let Some(timer) = timer {
            timer.as_mut().progressed();
        }
        return result;
    }
    let timer = timer.get_or_insert_with(|| Box::pin(IdleTimer::new(Some(timeout))));
    timer.as_mut().poll_waited(cx).map(|waited| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {} s", waited.as_secs_f64()),
        ))
    })
}

impl<T: AsyncRead> AsyncRead for SendTimeout<T> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for SendTimeout<T> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, buf);
        bounded(this.timer, *this.timeout, cx, result)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        bounded(this.timer, *this.timeout, cx, result)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let result = this.inner.poll_flush(cx);
        bounded(this.timer, *this.timeout, cx, result)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let result = this.inner.poll_shutdown(cx);
        bounded(this.timer, *this.timeout, cx, result)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const T: Duration = Duration::from_secs(5);

    /// A reader that keeps reading, however slowly, keeps the writes
    /// going; one that stops reading gets the writer a `TimedOut` error
    /// after the timeout.
    #[tokio::test(start_paused = true)]
    async fn a_write_may_wait_no_longer_than_the_timeout() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut near = Box::pin(SendTimeout::new(near, T));
        let chunk = [7u8; 64];
        for _ in 0..3 {
            // The pipe is full after this write.
            near.write_all(&chunk)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let write = tokio::spawn(async move {
                let result = near.write_all(&chunk).await;
                (near, result)
            });
            // The reader reads within the timeout: the waiting write goes
            // through.
            tokio::time::advance(T * 3 / 4).await;
            let mut buf = [0u8; 128];
            far.read_exact(&mut buf)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let (back, result) = write.await.unwrap_or_else(|e| panic!("{e}"));
            assert!(result.is_ok(), "{result:?}");
            near = back;
        }
        near.write_all(&chunk)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stuck = near.write_all(&chunk).await;
        let err = stuck.err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        drop(far);
    }
}
