//! [`ListenOptions`]: how the listening socket for [`serve`](crate::serve)
//! is made.

use std::{io, net::SocketAddr, num::NonZeroU32};

use tokio::net::{TcpListener, TcpSocket};

/// The accept queue length of [`ListenOptions::new`]: tokio's
/// `TcpListener::bind` default. The kernel caps it at
/// `net.core.somaxconn` (4096 on current Linux).
pub const DEFAULT_BACKLOG: u32 = 1024;

/// How a listening socket is made: `SO_REUSEPORT` and the accept queue
/// length (nginx's `listen … reuseport backlog=`, Envoy's
/// `enable_reuse_port` and `tcp_backlog_size`). `SO_REUSEADDR` is set on
/// Unix, as `tokio::net::TcpListener::bind` does.
///
/// With `reuse_port`, several processes (or threads) can listen on one
/// address and the kernel spreads new connections across them. That allows
/// a restart or an upgrade on one host without a moment where connections
/// are refused: start the new gateway on the same address, then stop the
/// old one, which stops accepting and drains. Every socket on the address
/// must set it, and belong to the same user. One limit of Linux remains:
/// connections that the kernel had already queued on the old listener when
/// it closes are reset, so a few connections arriving in that instant may
/// fail under heavy traffic.
///
/// In a config file these are `[server] reuse_port` and `backlog`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tollgate::ListenOptions;
///
/// let listener = ListenOptions::new()
///     .reuse_port(true)
///     .backlog(4096)
///     .bind("127.0.0.1:0".parse().unwrap())?;
/// // Another socket with reuse_port can bind the same address.
/// let again = ListenOptions::new()
///     .reuse_port(true)
///     .bind(listener.local_addr()?)?;
/// # drop(again); Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Sets `SO_REUSEPORT` (Unix only). Default off.
    pub reuse_port: bool,
    /// The accept queue length. Default [`DEFAULT_BACKLOG`].
    pub backlog: NonZeroU32,
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self {
            reuse_port: false,
            backlog: NonZeroU32::new(DEFAULT_BACKLOG).unwrap_or(NonZeroU32::MIN),
        }
    }
}

impl ListenOptions {
    /// No `SO_REUSEPORT`, an accept queue of [`DEFAULT_BACKLOG`].
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `SO_REUSEPORT` on the socket.
    #[must_use]
    pub fn reuse_port(mut self, reuse_port: bool) -> Self {
        self.reuse_port = reuse_port;
        self
    }

    /// Sets the accept queue length (0 is taken as 1).
    #[must_use]
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = NonZeroU32::new(backlog).unwrap_or(NonZeroU32::MIN);
        self
    }

    /// Binds `addr` and listens. Call it inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// When the socket cannot be made, bound (the address is in use by a
    /// socket without `SO_REUSEPORT`, say) or listened on, when
    /// `reuse_port` is asked for where there is no `SO_REUSEPORT`, or when
    /// called outside a tokio runtime.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        // tokio registers the listener with the runtime's reactor, and
        // panics without one: an error is kinder.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "ListenOptions::bind: call it inside a tokio runtime",
            ));
        }
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // As tokio's `TcpListener::bind`: on Unix only, where it lets a
        // restarted server bind past connections in TIME_WAIT (on Windows
        // it would let another socket take the port).
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        if self.reuse_port {
            #[cfg(unix)]
            socket.set_reuseport(true)?;
            #[cfg(not(unix))]
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "reuse_port: SO_REUSEPORT is not available on this platform",
            ));
        }
        socket.bind(addr)?;
        socket.listen(self.backlog.get())
    }
}
