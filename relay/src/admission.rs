//! Admission of TCP connections, before HTTP: caps on concurrent connections (in all and per
//! source address) and a deadline for the HTTP request and WebSocket handshake, so a peer that
//! opens connections and sends a header byte by byte (slowloris) or never sends one holds
//! nothing for long and cannot take every file descriptor.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// The limits, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_address: usize,
    pub handshake: Duration,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerAddress,
}

/// Open connections, in all and per source address.
#[derive(Default)]
pub struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Counts {
    /// Takes a place for a connection from `ip`, or says which cap is reached.
    pub fn admit(&mut self, ip: IpAddr, limits: &Limits) -> Result<(), Refusal> {
        if self.total >= limits.max_connections {
            return Err(Refusal::Total);
        }
        let n = self.by_address.entry(ip).or_insert(0);
        if *n >= limits.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    pub fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.by_address.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&ip);
            }
            self.total -= 1;
        }
    }
}

/// The relay's listener: admits connections within the limits, others get a 503 and are closed.
pub struct Listener {
    inner: TcpListener,
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
    metrics: Arc<Metrics>,
}

impl Listener {
    pub fn new(inner: TcpListener, limits: Limits, metrics: Arc<Metrics>) -> Listener {
        Listener { inner, limits, counts: Arc::default(), metrics }
    }
}

/// The peer of a connection, as the handlers see it (`ConnectInfo<Peer>`): its address and the
/// switch that lifts the handshake deadline once the connection is a WebSocket.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    upgraded: Arc<AtomicBool>,
}

impl Peer {
    /// The handshake is done: the deadline no longer applies (pings watch the connection now).
    pub fn upgraded(&self) {
        self.upgraded.store(true, Relaxed);
    }
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Peer {
        stream.remote_addr().clone()
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

impl axum::serve::Listener for Listener {
    type Io = Admitted;
    type Addr = Peer;

    async fn accept(&mut self) -> (Admitted, Peer) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // As axum's own listener: out of file descriptors is worth a pause.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let admitted = self.counts.lock().unwrap_or_else(|p| p.into_inner()).admit(addr.ip(), &self.limits);
            if let Err(refusal) = admitted {
                let counter = match refusal {
                    Refusal::Total => &self.metrics.refused_total,
                    Refusal::PerAddress => &self.metrics.refused_per_address,
                };
                counter.fetch_add(1, Relaxed);
                debug!(%addr, ?refusal, "connection refused: too many connections");
                // A best-effort answer that never waits: the socket is new, its buffer empty.
                let _ = stream.try_write(BUSY);
                continue;
            }
            // Small messages must leave at once, not wait for Nagle's algorithm and a delayed ACK.
            if let Err(error) = stream.set_nodelay(true) {
                warn!(%error, "cannot set TCP_NODELAY");
            }
            self.metrics.connections.fetch_add(1, Relaxed);
            let upgraded = Arc::new(AtomicBool::new(false));
            let io = Admitted {
                stream,
                ip: addr.ip(),
                counts: self.counts.clone(),
                metrics: self.metrics.clone(),
                deadline: Box::pin(tokio::time::sleep(self.limits.handshake)),
                upgraded: upgraded.clone(),
            };
            return (io, Peer { addr, upgraded });
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer { addr: self.inner.local_addr()?, upgraded: Arc::default() })
    }
}

/// An admitted connection: gives its place back when dropped, and fails its reads once the
/// handshake deadline passes before the connection became a WebSocket.
pub struct Admitted {
    stream: TcpStream,
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
    metrics: Arc<Metrics>,
    deadline: Pin<Box<Sleep>>,
    upgraded: Arc<AtomicBool>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).release(self.ip);
        self.metrics.connections.fetch_sub(1, Relaxed);
    }
}

impl AsyncRead for Admitted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // Polling the timer here registers the waker with it: a peer that sends nothing at all
        // is still woken up and closed when the deadline passes.
        if !self.upgraded.load(Relaxed) && self.deadline.as_mut().poll(cx).is_ready() {
            self.metrics.handshake_timeouts.fetch_add(1, Relaxed);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no complete request or handshake in time")));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_all_and_per_address_and_places_come_back() {
        let limits = Limits { max_connections: 3, max_per_address: 2, handshake: Duration::from_secs(1) };
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap(), "::1".parse().unwrap());
        let mut counts = Counts::default();
        assert_eq!(counts.admit(a, &limits), Ok(()));
        assert_eq!(counts.admit(a, &limits), Ok(()));
        assert_eq!(counts.admit(a, &limits), Err(Refusal::PerAddress));
        assert_eq!(counts.admit(b, &limits), Ok(()));
        assert_eq!(counts.admit(c, &limits), Err(Refusal::Total));
        counts.release(a);
        assert_eq!(counts.admit(c, &limits), Ok(()));
        counts.release(b);
        counts.release(b); // a second release of a gone address changes nothing
        assert_eq!((counts.total, counts.by_address.len()), (2, 2));
    }
}
