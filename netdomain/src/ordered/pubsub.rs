//! resh's own publish/subscribe: which session listens to which channel or pattern.
//!
//! Clients subscribe to resh, not to a replica (a subscribed connection cannot be shared), so
//! resh delivers messages itself. A `PUBLISH` still goes through the global order (in D-RESH,
//! through the group, so every host delivers it to its own subscribers, in the same order as
//! every other request); once it is decided, the sequencer hands its channel and message here,
//! and each subscribed session receives it. The publisher's answer is how many of this host's
//! subscribers received it, as a Redis Cluster node answers for its own.
//!
//! Patterns are globs as Redis matches them (`stringmatchlen`: `*`, `?`, `[...]` with ranges
//! and `^`, and `\` escapes).
use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::codec::{PubSubAnswer, PubSubQuery};

/// Who listens to what. See the module documentation.
#[derive(Debug, Default)]
pub struct Broker {
    channels: HashMap<Bytes, HashSet<u64>>,
    patterns: HashMap<Bytes, HashSet<u64>>,
    /// Each session's subscriptions, to drop them when it ends.
    sessions: HashMap<u64, (HashSet<Bytes>, HashSet<Bytes>)>,
}

/// One delivery of a message.
#[derive(Debug, PartialEq, Eq)]
pub struct Receiver {
    /// The session.
    pub session: u64,
    /// The pattern it matched, if through one.
    pub pattern: Option<Bytes>,
}

impl Broker {
    /// Session `session` subscribes to `name` (a channel, or a pattern).
    pub fn subscribe(&mut self, session: u64, name: Bytes, pattern: bool) {
        let table = if pattern { &mut self.patterns } else { &mut self.channels };
        table.entry(name.clone()).or_default().insert(session);
        let mine = self.sessions.entry(session).or_default();
        if pattern { &mut mine.1 } else { &mut mine.0 }.insert(name);
    }

    /// Session `session` unsubscribes from `name`.
    pub fn unsubscribe(&mut self, session: u64, name: &[u8], pattern: bool) {
        let table = if pattern { &mut self.patterns } else { &mut self.channels };
        if let Some(listeners) = table.get_mut(name) {
            listeners.remove(&session);
            if listeners.is_empty() {
                table.remove(name);
            }
        }
        if let Some(mine) = self.sessions.get_mut(&session) {
            if pattern { &mut mine.1 } else { &mut mine.0 }.remove(name);
            if mine.0.is_empty() && mine.1.is_empty() {
                self.sessions.remove(&session);
            }
        }
    }

    /// Session `session` ended: all its subscriptions go.
    pub fn drop_session(&mut self, session: u64) {
        let Some((channels, patterns)) = self.sessions.remove(&session) else { return };
        for (names, pattern) in [(channels, false), (patterns, true)] {
            for name in names {
                self.unsubscribe(session, &name, pattern);
            }
        }
    }

    /// The sessions a message on `channel` goes to: each once per channel subscription and
    /// once per matching pattern, as Redis delivers it.
    pub fn receivers(&self, channel: &[u8]) -> Vec<Receiver> {
        let mut out: Vec<Receiver> = self
            .channels
            .get(channel)
            .into_iter()
            .flatten()
            .map(|&session| Receiver { session, pattern: None })
            .collect();
        for (pattern, sessions) in &self.patterns {
            if glob_match(pattern, channel) {
                out.extend(sessions.iter().map(|&session| Receiver { session, pattern: Some(pattern.clone()) }));
            }
        }
        out
    }
}

impl Broker {
    /// What `PUBSUB` asks: the channels with subscribers (matching a glob, if given), in name
    /// order; how many sessions subscribe to each channel asked; how many patterns are
    /// subscribed to.
    pub fn answer(&self, query: &PubSubQuery) -> PubSubAnswer {
        match query {
            PubSubQuery::Channels(pattern) => {
                let mut names: Vec<Bytes> = self
                    .channels
                    .keys()
                    .filter(|name| pattern.as_ref().is_none_or(|p| glob_match(p, name)))
                    .cloned()
                    .collect();
                names.sort();
                PubSubAnswer::Names(names)
            }
            PubSubQuery::NumSub(channels) => PubSubAnswer::Counts(
                channels.iter().map(|c| (c.clone(), self.channels.get(c).map_or(0, HashSet::len))).collect(),
            ),
            PubSubQuery::NumPat => PubSubAnswer::Count(self.patterns.len()),
        }
    }
}

/// Whether `text` matches the glob `pattern`, with Redis's rules (case-sensitive).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point for `*`, as a pattern from a client must not cost
    // more than linear backtracking per star.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        // No match here: let the last star take one more byte.
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at `pattern[at]`: whether `c` is in it, and where the pattern goes on.
fn class_match(pattern: &[u8], at: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(i)? {
            b']' => break,
            b'\\' => {
                i += 1;
                matched |= *pattern.get(i)? == c;
                i += 1;
            }
            &lo if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') => {
                let hi = pattern[i + 2];
                let (lo, hi) = if lo > hi { (hi, lo) } else { (lo, hi) };
                matched |= (lo..=hi).contains(&c);
                i += 3;
            }
            &x => {
                matched |= x == c;
                i += 1;
            }
        }
    }
    Some((matched != negate, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubsub_is_answered_from_the_subscriptions() {
        let mut b = Broker::default();
        b.subscribe(1, "news".into(), false);
        b.subscribe(2, "news".into(), false);
        b.subscribe(2, "nerds".into(), false);
        b.subscribe(3, "n*".into(), true);
        b.subscribe(4, "n*".into(), true);
        assert_eq!(b.answer(&PubSubQuery::Channels(None)), PubSubAnswer::Names(vec!["nerds".into(), "news".into()]));
        assert_eq!(b.answer(&PubSubQuery::Channels(Some("new?".into()))), PubSubAnswer::Names(vec!["news".into()]));
        assert_eq!(
            b.answer(&PubSubQuery::NumSub(vec!["news".into(), "none".into()])),
            PubSubAnswer::Counts(vec![("news".into(), 2), ("none".into(), 0)]),
            "patterns are not counted"
        );
        assert_eq!(b.answer(&PubSubQuery::NumPat), PubSubAnswer::Count(1), "a pattern once, however many subscribe");
        b.drop_session(2);
        assert_eq!(b.answer(&PubSubQuery::Channels(None)), PubSubAnswer::Names(vec!["news".into()]));
    }

    #[test]
    fn globs_match_as_redis_matches_them() {
        for (pattern, text, expected) in [
            ("news.*", "news.sport", true),
            ("news.*", "news.", true),
            ("news.*", "new", false),
            ("*", "", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("a*", "b", false),
        ] {
            assert_eq!(glob_match(pattern.as_bytes(), text.as_bytes()), expected, "{pattern} ~ {text}");
        }
        // A pathological pattern stays cheap.
        let pattern = "*a".repeat(50) + "b";
        assert!(!glob_match(pattern.as_bytes(), "a".repeat(5000).as_bytes()));
    }

    #[test]
    fn receivers_by_channel_and_pattern_and_sessions_that_end_are_dropped() {
        let mut b = Broker::default();
        b.subscribe(1, Bytes::from_static(b"news"), false);
        b.subscribe(2, Bytes::from_static(b"news"), false);
        b.subscribe(2, Bytes::from_static(b"n*"), true);
        let mut got = b.receivers(b"news");
        got.sort_by_key(|r| (r.session, r.pattern.clone()));
        assert_eq!(
            got,
            vec![
                Receiver { session: 1, pattern: None },
                Receiver { session: 2, pattern: None },
                Receiver { session: 2, pattern: Some(Bytes::from_static(b"n*")) },
            ]
        );
        b.unsubscribe(1, b"news", false);
        assert_eq!(b.receivers(b"news").len(), 2);
        b.drop_session(2);
        assert!(b.receivers(b"news").is_empty());
        assert!(b.channels.is_empty() && b.patterns.is_empty() && b.sessions.is_empty());
    }
}
