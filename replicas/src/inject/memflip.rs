//! Bit flips in a process's memory, through /proc/PID/mem.
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};

use tracing::debug;

use super::process::{proc_stat, read_maps, Mapping};
use super::{InjectError, MemFlip, MemRegion, Rng};

/// How many random locations a memflip tries per bit before it gives up (a page may not be
/// readable through /proc/PID/mem, e.g. a file mapping beyond the end of its file).
const MEMFLIP_TRIES: u32 = 64;

/// What a memflip does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemFlipSpec {
    /// How many bits (at independent random places, or in the byte at `address`).
    pub bits: u32,
    /// Which mappings may be hit.
    pub region: MemRegion,
    /// Hit this byte instead of a random one.
    pub address: Option<u64>,
}

/// Flips `spec.bits` bits in the memory of process `pid`, through /proc/PID/mem (no ptrace
/// stop: the process keeps running, as it would under a real upset).
///
/// A random location is uniform over the bytes of the selected writable private mappings (so
/// big mappings are hit more often, as they would be by a particle), and its bit is uniform
/// too; a location that cannot be read (a file mapping past its file's end) is skipped for
/// another draw. Each flip is verified by reading the byte back.
pub fn memflip(pid: u32, spec: &MemFlipSpec, rng: &mut Rng) -> Result<Vec<MemFlip>, InjectError> {
    let maps = read_maps(pid)?;
    if maps.is_empty() {
        // A zombie has no memory left; otherwise it is the process's own business.
        proc_stat(pid)?;
    }
    let mut mem = match OpenOptions::new().read(true).write(true).open(format!("/proc/{pid}/mem")) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(InjectError::ProcessGone { pid })
        }
        Err(error) => return Err(InjectError::Io { pid, what: "open /proc/PID/mem", error }),
    };
    let mut flips = Vec::new();
    if let Some(address) = spec.address {
        let Some(m) = maps.iter().find(|m| m.writable_private() && m.start <= address && address < m.end) else {
            return Err(InjectError::AddressNotWritable { pid, address });
        };
        let mut bits: Vec<u8> = Vec::new();
        while bits.len() < spec.bits.min(8) as usize {
            let b = rng.below(8) as u8;
            if !bits.contains(&b) {
                bits.push(b);
            }
        }
        for bit in bits {
            let bytes = flip_byte(&mut mem, address, bit).map_err(|e| mem_error(pid, e))?;
            flips.push(took(pid, m, address, bit, bytes)?);
        }
        return Ok(flips);
    }
    let candidates: Vec<&Mapping> =
        maps.iter().filter(|m| m.writable_private() && m.selected_by(spec.region)).collect();
    let total: u64 = candidates.iter().map(|m| m.end - m.start).sum();
    if total == 0 {
        return Err(InjectError::NoWritableMemory { pid, region: spec.region });
    }
    let mut tries = 0;
    while flips.len() < spec.bits as usize {
        tries += 1;
        if tries > MEMFLIP_TRIES * spec.bits {
            return Err(InjectError::NoReadableByte { pid, region: spec.region, draws: MEMFLIP_TRIES });
        }
        let mut at = rng.below(total);
        let bit = rng.below(8) as u8;
        let Some(m) = candidates.iter().find(|m| {
            let len = m.end - m.start;
            if at < len {
                true
            } else {
                at -= len;
                false
            }
        }) else {
            continue;
        };
        let address = m.start + at;
        if flips.iter().any(|f: &MemFlip| f.address == address && f.bit == bit) {
            continue; // the same bit twice would undo the first flip
        }
        match flip_byte(&mut mem, address, bit) {
            Ok(bytes) => flips.push(took(pid, m, address, bit, bytes)?),
            Err(e) if e.raw_os_error() == Some(libc::EIO) || e.raw_os_error() == Some(libc::EFAULT) => {
                debug!(pid, address, error = %e, "memflip: byte not accessible, drawing another");
            }
            Err(e) => return Err(mem_error(pid, e)),
        }
    }
    Ok(flips)
}

/// The record of a flip, given the byte before, the byte written and the byte read back; or
/// why it did not take.
fn took(pid: u32, m: &Mapping, address: u64, bit: u8, (old, new, now): (u8, u8, u8)) -> Result<MemFlip, InjectError> {
    if now != new && now == old {
        if let Err(gone @ InjectError::ProcessGone { .. }) = proc_stat(pid) {
            return Err(gone);
        }
        return Err(InjectError::FlipNotTaken { pid, address });
    }
    Ok(MemFlip {
        address,
        region: m.label(),
        region_start: m.start,
        offset_in_region: address - m.start,
        perms: m.perms.clone(),
        bit,
        old,
        new,
    })
}

/// A failed access to /proc/PID/mem: end of file there means the address space is gone.
fn mem_error(pid: u32, error: io::Error) -> InjectError {
    if error.kind() == io::ErrorKind::UnexpectedEof || error.raw_os_error() == Some(libc::ESRCH) {
        return InjectError::ProcessGone { pid };
    }
    if let Err(gone @ InjectError::ProcessGone { .. }) = proc_stat(pid) {
        return gone;
    }
    InjectError::Io { pid, what: "access /proc/PID/mem", error }
}

/// Reads the byte at `address` and writes it back with `bit` flipped; returns the byte before,
/// the byte written and the byte read back after the write.
fn flip_byte(mem: &mut File, address: u64, bit: u8) -> io::Result<(u8, u8, u8)> {
    let mut byte = [0u8];
    mem.seek(SeekFrom::Start(address))?;
    mem.read_exact(&mut byte)?;
    let old = byte[0];
    let new = old ^ (1 << (bit & 7));
    mem.seek(SeekFrom::Start(address))?;
    mem.write_all(&[new])?;
    mem.seek(SeekFrom::Start(address))?;
    mem.read_exact(&mut byte)?;
    Ok((old, new, byte[0]))
}
