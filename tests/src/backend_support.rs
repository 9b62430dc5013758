//! A backend that counts what reaches it, for tests of hostile or slow
//! clients: how many requests it was called for, which handlers and
//! bodies the server has not dropped yet, and how much of a large body it
//! was asked for.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, body::Body, extract::State, routing::get};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

/// What the service behind `serve` saw: calls, `/held` handlers and `/big`
/// bodies not yet dropped, and the bytes `/big` bodies have produced;
/// `gate` holds `/held` requests.
#[derive(Clone, Debug)]
pub struct Backend {
    calls: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    produced: Arc<AtomicUsize>,
    gate: Arc<watch::Sender<bool>>,
}

/// One `/big` chunk.
pub static CHUNK: [u8; 16 * 1024] = [b'x'; 16 * 1024];
/// `/big` is this many chunks (1 GiB), made as they are asked for.
pub const BIG_CHUNKS: usize = 64 * 1024;

/// Counts a handler or a body as running until dropped.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(counter))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Backend {
    /// A backend that has seen nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            produced: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(watch::channel(false).0),
        }
    }

    /// Requests it was called for.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// `/held` handlers and `/big` bodies not yet dropped.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Bytes the `/big` bodies have made.
    pub fn produced(&self) -> usize {
        self.produced.load(Ordering::SeqCst)
    }

    /// Lets the `/held` requests answer.
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// `/held` waits for the gate, `/big` streams 1 GiB lazily, anything
    /// else is `ok`; every request counts as a call.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/held", get(held))
            .route("/big", get(big))
            .fallback(ok)
            .with_state(self.clone())
    }
}

async fn ok(State(backend): State<Backend>) -> &'static str {
    backend.calls.fetch_add(1, Ordering::SeqCst);
    "ok"
}

async fn held(State(backend): State<Backend>) -> &'static str {
    backend.calls.fetch_add(1, Ordering::SeqCst);
    let _running = Running::enter(&backend.in_flight);
    let mut gate = backend.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    "released"
}

async fn big(State(backend): State<Backend>) -> Body {
    backend.calls.fetch_add(1, Ordering::SeqCst);
    let produced = Arc::clone(&backend.produced);
    // Counts the body as running until the server drops it.
    let running = Running::enter(&backend.in_flight);
    Body::from_stream(futures_util::stream::iter(0..BIG_CHUNKS).map(move |_| {
        let _running = &running;
        produced.fetch_add(CHUNK.len(), Ordering::SeqCst);
        Ok::<_, Infallible>(Bytes::from_static(&CHUNK))
    }))
}

impl Default for Backend {
    fn default() -> Self {
        Self::new()
    }
}
