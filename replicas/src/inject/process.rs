//! The replica's process as /proc shows it (its state, its memory map) and the signals that
//! crash or hang it.
use std::io;
use std::time::Duration;

use tracing::debug;

use super::{Effect, InjectError, MemRegion};
use crate::sys;

/// A process's state letter and start time, from /proc/PID/stat. The start time tells a
/// process from a later one that got the same pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `T` (stopped), `t`, `Z` (zombie), `X`, ...
    pub state: char,
    /// Clock ticks after boot when the process started.
    pub start_time: u64,
    /// The kernel's task flags (field 9).
    pub flags: u64,
}

impl ProcStat {
    /// Whether the process has begun to exit (`PF_EXITING`). The kernel sets it before it
    /// closes the process's files, so a connection closed by a dying process is recognisable
    /// as such even before the process becomes a zombie.
    pub fn exiting(&self) -> bool {
        const PF_EXITING: u64 = 0x4;
        self.flags & PF_EXITING != 0
    }
}

/// Reads /proc/PID/stat; a process that does not exist, or is a zombie, is `ProcessGone`.
pub fn proc_stat(pid: u32) -> Result<ProcStat, InjectError> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(InjectError::ProcessGone { pid })
        }
        Err(error) => return Err(InjectError::Io { pid, what: "read /proc/PID/stat", error }),
    };
    // The command name is in parentheses and may hold anything; the fields follow the last ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next());
    // Field 22 of the whole line is the start time; fields[0] is field 3.
    let start_time = fields.get(19).and_then(|s| s.parse().ok());
    let flags = fields.get(6).and_then(|s| s.parse().ok());
    match (state, start_time, flags) {
        (Some('Z' | 'X'), _, _) => Err(InjectError::ProcessGone { pid }),
        (Some(state), Some(start_time), Some(flags)) => Ok(ProcStat { state, start_time, flags }),
        _ => Err(InjectError::StatFormat { pid }),
    }
}

fn signal(pid: u32, sig: libc::c_int, what: &'static str) -> Result<(), InjectError> {
    sys::signal_pid(pid, sig).map_err(|error| {
        if error.raw_os_error() == Some(libc::ESRCH) {
            InjectError::ProcessGone { pid }
        } else {
            InjectError::Io { pid, what, error }
        }
    })
}

/// Kills process `pid` with SIGKILL: a crash the process cannot catch or clean up after.
pub fn crash(pid: u32) -> Result<Effect, InjectError> {
    proc_stat(pid)?;
    signal(pid, libc::SIGKILL, "send SIGKILL")?;
    Ok(Effect::Killed { signal: "SIGKILL".into() })
}

/// Stops process `pid` with SIGSTOP and continues it with SIGCONT after `duration`, from a
/// thread of its own (so it works with or without a runtime). SIGCONT is only sent if the pid
/// still belongs to the same process (its start time is unchanged): a process the supervisor
/// killed and whose pid was reused is left alone.
pub fn hang(pid: u32, duration: Duration) -> Result<Effect, InjectError> {
    let before = proc_stat(pid)?;
    signal(pid, libc::SIGSTOP, "send SIGSTOP")?;
    std::thread::Builder::new()
        .name(format!("resh-hang-{pid}"))
        .spawn(move || {
            std::thread::sleep(duration);
            match proc_stat(pid) {
                Ok(now) if now.start_time == before.start_time => {
                    if let Err(e) = sys::signal_pid(pid, libc::SIGCONT) {
                        debug!(pid, error = %e, "cannot continue hung process");
                    }
                }
                _ => debug!(pid, "hung process is gone; not continuing it"),
            }
        })
        .map_err(|error| {
            // Without the thread the process would stay stopped for ever: undo the stop.
            let _ = sys::signal_pid(pid, libc::SIGCONT);
            InjectError::Io { pid, what: "start the thread that ends the hang", error }
        })?;
    Ok(Effect::Stopped { duration_ms: duration.as_millis().min(u128::from(u64::MAX)) as u64 })
}

/// One line of /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rw-p` and the like.
    pub perms: String,
    /// The path or pseudo-name (`[heap]`), empty for anonymous memory.
    pub path: String,
}

impl Mapping {
    /// Writable and private: flipping a bit of a *shared* writable mapping could write through
    /// to a file or to other processes, so those are never candidates.
    pub fn writable_private(&self) -> bool {
        let p = self.perms.as_bytes();
        p.get(1) == Some(&b'w') && p.get(3) == Some(&b'p')
    }

    /// Which region selector it belongs to, if any (`[vvar]`, `[vdso]` and the like: none).
    pub fn class(&self) -> Option<MemRegion> {
        let p = self.path.as_str();
        if p == "[heap]" {
            Some(MemRegion::Heap)
        } else if p == "[stack]" || p.starts_with("[stack:") {
            Some(MemRegion::Stack)
        } else if p.is_empty() || p.starts_with("[anon") {
            Some(MemRegion::Anon)
        } else if p.starts_with('/') {
            Some(MemRegion::Data)
        } else {
            None
        }
    }

    /// Whether `region` selects it.
    pub fn selected_by(&self, region: MemRegion) -> bool {
        match self.class() {
            None => false,
            Some(c) => region == MemRegion::Any || region == c,
        }
    }

    pub(super) fn label(&self) -> String {
        if self.path.is_empty() {
            "anon".into()
        } else {
            self.path.clone()
        }
    }
}

/// Parses the text of /proc/PID/maps (lines it cannot read are skipped).
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let (range, perms) = (fields.first()?, fields.get(1)?);
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            (end > start).then(|| Mapping {
                start,
                end,
                perms: perms.to_string(),
                path: fields.get(5..).map(|p| p.join(" ")).unwrap_or_default(),
            })
        })
        .collect()
}

/// The mappings of process `pid`.
pub fn read_maps(pid: u32) -> Result<Vec<Mapping>, InjectError> {
    match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(text) => Ok(parse_maps(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Err(InjectError::ProcessGone { pid })
        }
        Err(error) => Err(InjectError::Io { pid, what: "read /proc/PID/maps", error }),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_parsed_and_classified() {
        let text = "\
55d0c6a2e000-55d0c6a4f000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f1000000000-7f1000001000 r--p 00000000 08:01 1234                       /usr/lib/libc.so.6
7f1000001000-7f1000002000 rw-p 00001000 08:01 1234                       /usr/lib/libc.so.6
7f2000000000-7f2000001000 rw-s 00000000 00:05 99                         /dev/shm/x
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd00100000-7ffd00102000 r--p 00000000 00:00 0                          [vvar]
garbage line
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 7);
        let classes: Vec<Option<MemRegion>> = maps.iter().map(Mapping::class).collect();
        assert_eq!(
            classes,
            [
                Some(MemRegion::Heap),
                Some(MemRegion::Anon),
                Some(MemRegion::Data),
                Some(MemRegion::Data),
                Some(MemRegion::Data),
                Some(MemRegion::Stack),
                None
            ]
        );
        let writable: Vec<bool> = maps.iter().map(Mapping::writable_private).collect();
        assert_eq!(writable, [true, true, false, true, false, true, false]);
        assert!(maps[3].selected_by(MemRegion::Data) && maps[3].selected_by(MemRegion::Any));
        assert!(!maps[3].selected_by(MemRegion::Heap));
        assert!(!maps[6].selected_by(MemRegion::Any));
    }
}
