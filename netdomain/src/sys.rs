//! Two socket calls tokio does not offer: how many bytes the kernel still holds for a
//! connection (used only while resh drains on shutdown, to tell a quiet stream session from
//! one whose bytes are still on their way: see `stream::serve_client`), and turning a
//! connection's close back into a normal one after a zero linger time was set.
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

/// Clears `SO_LINGER` on `socket`: its close is a normal one (FIN) again. A session's client
/// connection gets a zero linger time when it is accepted, so that a session that ends
/// abnormally (aborted, or a panic) resets it; the session clears it where it closes cleanly.
pub fn clear_linger(socket: &impl AsRawFd) -> io::Result<()> {
    let off = libc::linger { l_onoff: 0, l_linger: 0 };
    // SAFETY: setsockopt reads one `linger` from the struct we own; `fd` is an open socket
    // borrowed for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(off).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
