//! What the vote compares of a Redis reply whose order is not part of its meaning.
//!
//! Each redis-server seeds its hash tables randomly when it starts, so `SMEMBERS`, `HGETALL`,
//! `KEYS` and friends list the same elements in a different order on each replica. Compared
//! byte for byte, correct replicas would disagree (the request undecidable) or, when two
//! happened to agree, the third would be blamed for nothing. So the vote compares such a reply
//! as a multiset: of its elements ([`ReplyShape::Set`]), of its key-value pairs
//! ([`ReplyShape::Map`]), or of its elements at every level ([`ReplyShape::NestedSet`]). The
//! client still gets one agreeing replica's reply byte for byte: normalising is for the
//! comparison only.
//!
//! The digest is over the aggregate's type byte, its element count and its elements (each
//! length-prefixed) in sorted order, so two replies agree exactly when they hold the same
//! elements, with the same multiplicity, in any order.
use blake3::Hasher;
use voter::Digest;

use super::frame::{string2ll, RespResponseParser};
use crate::codec::{ReplyShape, ResponseParser};

/// The deepest level [`ReplyShape::NestedSet`] sorts; deeper values are compared as they are
/// (a replica's nesting must not grow resh's stack).
const MAX_NESTED: usize = 8;

/// The digest of `response` under `shape`, or `None` if it does not have that shape.
pub fn shaped_digest(shape: ReplyShape, response: &[u8]) -> Option<Digest> {
    let mut hasher = Hasher::new();
    hasher.update(match shape {
        ReplyShape::Exact => return None,
        ReplyShape::Unvoted => return Some(blake3::hash(b"resh: unvoted reply")),
        ReplyShape::Set => b"set",
        ReplyShape::Map => b"map",
        ReplyShape::NestedSet => b"nested",
        ReplyShape::EachNestedSet => b"each-nested",
        ReplyShape::ScanSet => b"scan-set",
        ReplyShape::ScanMap => b"scan-map",
    });
    match shape {
        ReplyShape::Set => multiset(&mut hasher, response, 1)?,
        ReplyShape::Map => multiset(&mut hasher, response, 2)?,
        ReplyShape::NestedSet => {
            hasher.update(&nested(response, 0)?);
        }
        ReplyShape::EachNestedSet => {
            let (kind, items) = elements(response)?;
            hasher.update(&[kind]);
            hasher.update(&(items.len() as u64).to_le_bytes());
            for item in items {
                hasher.update(&nested(item, 1)?);
            }
        }
        ReplyShape::ScanSet | ReplyShape::ScanMap => {
            // `*2`, the cursor (a bulk string), the elements.
            let (kind, count, at) = aggregate(response)?;
            if kind != b'*' || count != 2 {
                return None;
            }
            let cursor_len = value_len(&response[at..])?;
            let cursor = &response[at..at + cursor_len];
            length_prefixed(&mut hasher, cursor);
            let per = if shape == ReplyShape::ScanSet { 1 } else { 2 };
            multiset(&mut hasher, &response[at + cursor_len..], per)?
        }
        ReplyShape::Exact | ReplyShape::Unvoted => return None,
    }
    Some(hasher.finalize())
}

/// An aggregate's type byte, its element count (a map's pairs count twice) and where its first
/// element starts; `None` for anything else (a null, a scalar).
pub(super) fn aggregate(value: &[u8]) -> Option<(u8, usize, usize)> {
    let kind = *value.first()?;
    if !matches!(kind, b'*' | b'~' | b'%' | b'>') {
        return None;
    }
    let line_end = value.windows(2).position(|w| w == b"\r\n")?;
    let n = usize::try_from(string2ll(&value[1..line_end])?).ok()?;
    let count = if kind == b'%' { n.checked_mul(2)? } else { n };
    Some((kind, count, line_end + 2))
}

/// The length of the complete value at the front of `buf`.
pub(super) fn value_len(buf: &[u8]) -> Option<usize> {
    RespResponseParser::default().parse(buf).ok().flatten()
}

/// The elements of the aggregate `value`, as slices; with its type byte.
pub(super) fn elements(value: &[u8]) -> Option<(u8, Vec<&[u8]>)> {
    let (kind, count, mut at) = aggregate(value)?;
    // A count beyond what the bytes could hold is not a real reply: do not reserve for it.
    let mut items = Vec::with_capacity(count.min(value.len() / 3));
    for _ in 0..count {
        let len = value_len(value.get(at..)?)?;
        items.push(&value[at..at + len]);
        at += len;
    }
    (at == value.len()).then_some((kind, items))
}

fn length_prefixed(hasher: &mut Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Hashes the aggregate `value` as a multiset of groups of `per` consecutive elements.
fn multiset(hasher: &mut Hasher, value: &[u8], per: usize) -> Option<()> {
    let (kind, items) = elements(value)?;
    if items.len() % per != 0 {
        return None;
    }
    let mut groups: Vec<&[&[u8]]> = items.chunks(per).collect();
    groups.sort_unstable();
    hasher.update(&[kind]);
    hasher.update(&(items.len() as u64).to_le_bytes());
    for group in groups {
        for element in group {
            length_prefixed(hasher, element);
        }
    }
    Some(())
}

/// The digest of `value` with every aggregate in it taken as a multiset, down to
/// [`MAX_NESTED`] levels.
fn nested(value: &[u8], depth: usize) -> Option<[u8; 32]> {
    if depth >= MAX_NESTED || aggregate(value).is_none() {
        return Some(*blake3::hash(value).as_bytes());
    }
    let (kind, items) = elements(value)?;
    let mut digests = items.iter().map(|item| nested(item, depth + 1)).collect::<Option<Vec<_>>>()?;
    digests.sort_unstable();
    let mut hasher = Hasher::new();
    hasher.update(&[kind]);
    hasher.update(&(digests.len() as u64).to_le_bytes());
    for digest in digests {
        hasher.update(&digest);
    }
    Some(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::resp::encode_array;
    use proptest::prelude::*;

    fn array(items: &[&[u8]]) -> Vec<u8> {
        encode_array(items).to_vec()
    }

    #[test]
    fn a_set_in_any_order_is_the_same_and_a_different_set_is_not() {
        let a = array(&[b"a", b"b", b"c"]);
        let b = array(&[b"c", b"a", b"b"]);
        let c = array(&[b"c", b"a", b"d"]);
        let d = array(&[b"a", b"b"]);
        let digest = |r: &[u8]| shaped_digest(ReplyShape::Set, r).expect("a set");
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
        assert_ne!(digest(&a), digest(&d));
        // Multiplicity counts (HVALS may repeat a value).
        assert_ne!(digest(&array(&[b"a", b"a", b"b"])), digest(&array(&[b"a", b"b", b"b"])));
        // An element's bytes are not confused with its neighbour's.
        assert_ne!(digest(&array(&[b"ab", b"c"])), digest(&array(&[b"a", b"bc"])));
        // RESP3 set and RESP2 array differ: the client would see the difference.
        let set3 = b"~2\r\n$1\r\na\r\n$1\r\nb\r\n";
        let set3_swapped = b"~2\r\n$1\r\nb\r\n$1\r\na\r\n";
        assert_eq!(digest(set3), digest(set3_swapped));
        assert_ne!(digest(set3), digest(&array(&[b"a", b"b"])));
    }

    #[test]
    fn a_map_is_compared_by_pairs() {
        let digest = |r: &[u8]| shaped_digest(ReplyShape::Map, r).expect("a map");
        let a = array(&[b"f1", b"v1", b"f2", b"v2"]);
        let b = array(&[b"f2", b"v2", b"f1", b"v1"]);
        // The same elements, paired differently: a different hash.
        let c = array(&[b"f1", b"v2", b"f2", b"v1"]);
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
        let map3 = b"%2\r\n$2\r\nf1\r\n:1\r\n$2\r\nf2\r\n:2\r\n";
        let map3_swapped = b"%2\r\n$2\r\nf2\r\n:2\r\n$2\r\nf1\r\n:1\r\n";
        assert_eq!(digest(map3), digest(map3_swapped));
        assert_eq!(shaped_digest(ReplyShape::Map, &array(&[b"odd"])), None);
    }

    #[test]
    fn scans_compare_the_cursor_and_the_elements_as_a_set() {
        let scan = |cursor: &[u8], items: &[&[u8]]| {
            let inner = array(items);
            let mut r = b"*2\r\n".to_vec();
            r.extend_from_slice(&array(&[cursor])[4..]);
            r.extend_from_slice(&inner);
            r
        };
        let digest = |shape, r: &[u8]| shaped_digest(shape, r).expect("a scan reply");
        assert_eq!(
            digest(ReplyShape::ScanSet, &scan(b"0", &[b"a", b"b"])),
            digest(ReplyShape::ScanSet, &scan(b"0", &[b"b", b"a"]))
        );
        assert_ne!(
            digest(ReplyShape::ScanSet, &scan(b"0", &[b"a", b"b"])),
            digest(ReplyShape::ScanSet, &scan(b"7", &[b"b", b"a"]))
        );
        assert_eq!(
            digest(ReplyShape::ScanMap, &scan(b"0", &[b"m", b"1", b"n", b"2"])),
            digest(ReplyShape::ScanMap, &scan(b"0", &[b"n", b"2", b"m", b"1"]))
        );
        assert_ne!(
            digest(ReplyShape::ScanMap, &scan(b"0", &[b"m", b"1", b"n", b"2"])),
            digest(ReplyShape::ScanMap, &scan(b"0", &[b"m", b"2", b"n", b"1"]))
        );
    }

    #[test]
    fn nested_sets_sort_every_level() {
        let digest = |r: &[u8]| shaped_digest(ReplyShape::NestedSet, r).expect("nested");
        let inner_a = array(&[b"x", b"y"]);
        let inner_b = array(&[b"y", b"x"]);
        let outer = |first: &[u8], second: &[u8]| {
            let mut r = b"*2\r\n".to_vec();
            r.extend_from_slice(first);
            r.extend_from_slice(second);
            r
        };
        let other = array(&[b"z"]);
        assert_eq!(digest(&outer(&inner_a, &other)), digest(&outer(&other, &inner_b)));
        assert_ne!(digest(&outer(&inner_a, &other)), digest(&outer(&other, &array(&[b"x", b"z"]))));
    }

    #[test]
    fn each_nested_set_keeps_the_order_of_the_elements() {
        let digest = |r: &[u8]| shaped_digest(ReplyShape::EachNestedSet, r).expect("an array");
        let outer = |parts: &[&[u8]]| {
            let mut r = format!("*{}\r\n", parts.len()).into_bytes();
            for p in parts {
                r.extend_from_slice(p);
            }
            r
        };
        let (ab, ba) = (array(&[b"a", b"b"]), array(&[b"b", b"a"]));
        assert_eq!(digest(&outer(&[b":1\r\n", &ab])), digest(&outer(&[b":1\r\n", &ba])));
        assert_ne!(digest(&outer(&[b":1\r\n", &ab])), digest(&outer(&[&ab, b":1\r\n"])));
        assert_ne!(digest(&outer(&[b":1\r\n", &ab])), digest(&outer(&[b":2\r\n", &ab])));
    }

    #[test]
    fn what_is_not_an_aggregate_has_no_shape() {
        for shape in [ReplyShape::Set, ReplyShape::Map, ReplyShape::ScanSet, ReplyShape::ScanMap] {
            assert_eq!(shaped_digest(shape, b"$1\r\na\r\n"), None);
            assert_eq!(shaped_digest(shape, b"*-1\r\n"), None);
            assert_eq!(shaped_digest(shape, b"*3\r\n$1\r\na\r\n"), None, "truncated");
        }
        assert_eq!(shaped_digest(ReplyShape::Exact, b"*0\r\n"), None);
        assert_eq!(shaped_digest(ReplyShape::Unvoted, b"$1\r\na\r\n"), shaped_digest(ReplyShape::Unvoted, b":1\r\n"));
        // An empty collection still has a shape.
        assert!(shaped_digest(ReplyShape::Set, b"*0\r\n").is_some());
    }

    proptest! {
        /// Any permutation of a set's members digests alike under Set; any bytes never panic.
        #[test]
        fn permutations_agree(mut items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..12), seed in any::<u64>(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
            let a = encode_array(&items);
            // A deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..items.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                items.swap(i, (s >> 33) as usize % (i + 1));
            }
            let b = encode_array(&items);
            prop_assert_eq!(shaped_digest(ReplyShape::Set, &a), shaped_digest(ReplyShape::Set, &b));
            prop_assert!(shaped_digest(ReplyShape::Set, &a).is_some());
            for shape in [ReplyShape::Set, ReplyShape::Map, ReplyShape::NestedSet, ReplyShape::ScanSet, ReplyShape::ScanMap] {
                let _ = shaped_digest(shape, &junk);
            }
        }
    }
}
