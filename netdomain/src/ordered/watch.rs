//! WATCH (optimistic locking), kept by resh in the global order.
//!
//! Redis keeps watched keys per connection, and every session shares one connection per
//! replica, so resh keeps them itself: a session's WATCH is ordered (as a marker request the
//! replicas only echo), and from that point of the order on, any write that names a watched key
//! marks the watch dirty; at the session's EXEC, a dirty watch turns the transaction's EXEC into
//! a DISCARD (nothing runs; the client gets a nil reply, as from Redis). Every host applies the
//! same order to the same table, so every host decides alike (D-RESH).
//!
//! A write "names" a key when any of its arguments equals it: more than Redis counts (a value
//! equal to a key's name), never less for commands that take their keys as arguments. Not
//! seen: a key that expires or is evicted, and a key a script changes without being given it.
//!
//! Bounded by the sessions: a session that ends while it watches orders the end of its watch.
//! (A D-RESH host that crashes leaves its sessions' watches in the other hosts' tables.) A host
//! that joins by state transfer gets the table with the state ([`WatchTable::export`]), as it
//! stands at the point of the copy, so it decides the later EXECs as the others do.
use std::collections::{HashMap, HashSet};

use bytes::Bytes;

/// A session, as the order knows it: its host and its number there.
pub type Watcher = (u32, u64);

/// Who watches what. See the module documentation.
#[derive(Debug, Default)]
pub struct WatchTable {
    watchers: HashMap<Watcher, (HashSet<Bytes>, bool)>,
    by_key: HashMap<Bytes, HashSet<Watcher>>,
}

impl WatchTable {
    /// No session watches anything: writes need not be looked at.
    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// How many sessions watch.
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    /// `watcher` watches `keys` from here on (in addition to what it watched).
    pub fn watch(&mut self, watcher: Watcher, keys: Vec<Bytes>) {
        let entry = self.watchers.entry(watcher).or_insert_with(|| (HashSet::new(), false));
        for key in keys {
            self.by_key.entry(key.clone()).or_default().insert(watcher);
            entry.0.insert(key);
        }
    }

    /// `watcher` watches nothing any more; whether its watch was dirty, if it had one.
    pub fn take(&mut self, watcher: Watcher) -> Option<bool> {
        let (keys, dirty) = self.watchers.remove(&watcher)?;
        for key in keys {
            if let Some(watchers) = self.by_key.get_mut(&key) {
                watchers.remove(&watcher);
                if watchers.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
        Some(dirty)
    }

    /// A write named these arguments: every watch on one of them is dirty.
    pub fn touch<'a>(&mut self, args: impl IntoIterator<Item = &'a [u8]>) {
        for arg in args {
            if let Some(watchers) = self.by_key.get(arg) {
                for watcher in watchers {
                    if let Some(entry) = self.watchers.get_mut(watcher) {
                        entry.1 = true;
                    }
                }
            }
        }
    }

    /// The table, one frame per watcher: its host (4 bytes, big-endian), its session (8), whether
    /// its watch is dirty (1), then each key as a 4-byte length and its bytes.
    pub fn export(&self) -> Vec<Bytes> {
        let mut watchers: Vec<_> = self.watchers.iter().collect();
        watchers.sort_by_key(|(w, _)| **w);
        watchers
            .into_iter()
            .map(|((host, session), (keys, dirty))| {
                let mut frame = Vec::with_capacity(13 + keys.iter().map(|k| 4 + k.len()).sum::<usize>());
                frame.extend_from_slice(&host.to_be_bytes());
                frame.extend_from_slice(&session.to_be_bytes());
                frame.push(u8::from(*dirty));
                for key in keys {
                    frame.extend_from_slice(&(key.len() as u32).to_be_bytes());
                    frame.extend_from_slice(key);
                }
                Bytes::from(frame)
            })
            .collect()
    }

    /// The table [`export`](Self::export) wrote, or what is wrong with the frames (they come
    /// from another host).
    pub fn import(frames: &[Bytes]) -> Result<WatchTable, String> {
        let mut table = WatchTable::default();
        for frame in frames {
            let bad = || format!("a malformed watch entry of {} bytes", frame.len());
            let (host, rest) = frame.split_first_chunk::<4>().ok_or_else(bad)?;
            let (session, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            let (dirty, mut rest) = rest.split_first().ok_or_else(bad)?;
            let watcher = (u32::from_be_bytes(*host), u64::from_be_bytes(*session));
            let mut keys = Vec::new();
            while !rest.is_empty() {
                let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
                let len = u32::from_be_bytes(*len) as usize;
                let key = tail.get(..len).ok_or_else(bad)?;
                keys.push(Bytes::copy_from_slice(key));
                rest = &tail[len..];
            }
            table.watch(watcher, keys);
            if *dirty != 0 {
                if let Some(entry) = table.watchers.get_mut(&watcher) {
                    entry.1 = true;
                }
            }
        }
        Ok(table)
    }

    /// A write that may change any key (FLUSHALL): every watch is dirty.
    pub fn touch_all(&mut self) {
        for entry in self.watchers.values_mut() {
            entry.1 = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_naming_a_watched_key_makes_only_those_watches_dirty() {
        let mut t = WatchTable::default();
        t.watch((0, 1), vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        t.watch((1, 1), vec![Bytes::from_static(b"c")]);
        t.touch([&b"SET"[..], b"b", b"1"]);
        assert_eq!(t.take((0, 1)), Some(true));
        assert_eq!(t.take((1, 1)), Some(false));
        assert_eq!(t.take((1, 1)), None, "taken");
        assert!(t.is_empty() && t.by_key.is_empty());
        t.watch((0, 2), vec![Bytes::from_static(b"x")]);
        t.touch_all();
        assert_eq!(t.take((0, 2)), Some(true));
    }

    #[test]
    fn the_table_goes_to_a_joining_host_whole() {
        let mut t = WatchTable::default();
        t.watch((0, 1), vec![Bytes::from_static(b"a"), Bytes::from_static(b"")]);
        t.watch((2, 9), vec![Bytes::from_static(b"c")]);
        t.touch([&b"c"[..]]);
        let mut copy = WatchTable::import(&t.export()).expect("valid");
        assert_eq!(copy.len(), 2);
        copy.touch([&b""[..]]);
        assert_eq!(copy.take((2, 9)), Some(true), "dirty before the copy");
        assert_eq!(copy.take((0, 1)), Some(true), "an empty key is a key");
        for bad in [&b"\0\0"[..], b"\0\0\0\0\0\0\0\0\0\0\0\0", b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x09x"] {
            assert!(WatchTable::import(&[Bytes::copy_from_slice(bad)]).is_err(), "{bad:?}");
        }
    }
}
