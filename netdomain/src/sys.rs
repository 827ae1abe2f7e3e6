//! The one socket query tokio does not offer: how many bytes the kernel still holds for a
//! connection. Used only while resh drains on shutdown, to tell a quiet stream session from
//! one whose bytes are still on their way (see `stream::serve_client`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

/// Bytes the kernel holds for a TCP connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queued {
    /// Received and not yet read by resh (SIOCINQ).
    pub unread: usize,
    /// Written by resh and not yet acknowledged by the peer (SIOCOUTQ).
    pub unacked: usize,
}

impl Queued {
    /// Nothing on its way either way.
    pub fn is_empty(&self) -> bool {
        self.unread == 0 && self.unacked == 0
    }
}

/// What the kernel holds for `socket`.
pub fn queued(socket: &impl AsRawFd) -> io::Result<Queued> {
    let fd = socket.as_raw_fd();
    let mut unread: libc::c_int = 0;
    let mut unacked: libc::c_int = 0;
    // SAFETY: both ioctls write one c_int into the variable we pass; `fd` is an open socket
    // borrowed for the call.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above (SIOCOUTQ shares TIOCOUTQ's number).
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unacked) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Queued { unread: usize::try_from(unread).unwrap_or(0), unacked: usize::try_from(unacked).unwrap_or(0) })
}
