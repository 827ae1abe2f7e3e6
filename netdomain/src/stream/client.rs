//! The client's side of a stream session, as the shell uses it.
//!
//! The shell needs little of the client's connection: read, write (one buffer or several),
//! half-close, reset, and the two addresses. Behind this trait the same shell serves a client
//! reached through the kernel's TCP ([`TcpStream`]) or another stack (smoltcp on a TAP device,
//! where the original destination is the address the client meant, not ours).
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// One client connection, polled by the session's task.
pub trait ClientIo {
    /// Reads into `buf`: how many bytes, 0 at the end of the client's input.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes from `buf`: how many bytes the connection took (0: it takes no more).
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Writes from several buffers in order, as one write where the connection can.
    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>>;
    /// Closes the write side (FIN); the client's input may still come.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Closes the connection with a reset (RST), so that the client cannot take what it got for
    /// a complete answer.
    fn reset(self);
    /// Closes the connection normally (FIN after the last byte): the client got all of its
    /// output.
    fn close(self);
    /// The client's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// The address the client connected to: for a plain proxy, the address it listens on.
    fn original_dst(&self) -> io::Result<SocketAddr>;
    /// Whether bytes are still on their way in the connection: input resh has not read, or
    /// output the client has not acknowledged. Asked only while resh drains.
    fn in_flight(&self) -> bool;
}

impl ClientIo for TcpStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        match AsyncRead::poll_read(Pin::new(self), cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(self), cx, buf)
    }

    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write_vectored(Pin::new(self), cx, bufs)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(self), cx)
    }

    fn reset(self) {
        // A zero linger time makes the close a reset.
        let _ = self.set_zero_linger();
        drop(self);
    }

    fn close(self) {
        // The zero linger time set at accept (see `server::serve`) would make this a reset.
        let _ = crate::sys::clear_linger(&self);
        drop(self);
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self)
    }

    fn original_dst(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }

    fn in_flight(&self) -> bool {
        // Unknown counts as in flight: a wrong guess costs a reset, never a false FIN.
        crate::sys::queued(self).map_or(true, |q| !q.is_empty())
    }
}
