//! The few system calls the supervisor and the fault injector need that std and tokio do not
//! offer.
//!
//! This is the crate's only unsafe code; each call is a plain syscall wrapper with no memory
//! handed to the kernel.
#![allow(unsafe_code)]

use std::io;

/// Makes the calling (child) process receive SIGKILL when its parent dies, so that replicas
/// never outlive a resh that was killed without a chance to stop them.
///
/// Meant to run in `pre_exec`, between fork and exec: prctl is async-signal-safe.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to the process group led by `pid` (replicas run in a group of their own, so
/// that a shell wrapper's children are stopped with it).
pub fn signal_group(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) takes integers only.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to the single process `pid` (fault injection: a crash or a hang of one
/// process, not of its whole group).
pub fn signal_pid(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pid <= 0 {
        // kill(0 or negative) would signal whole groups: never what a caller of this meant.
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) takes integers only.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
