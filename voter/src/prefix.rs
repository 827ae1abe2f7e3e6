//! Longest common prefix of two byte slices: the comparison every vote is made of.
//!
//! Equal blocks are compared with slice equality (a `memcmp`, vectorised by libc), and only the
//! block that differs is scanned byte by byte, so agreeing replicas cost one pass over memory.

/// Length of the longest common prefix of `a` and `b`.
pub fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    for block in [4096, 64] {
        while i + block <= n && a[i..i + block] == b[i..i + block] {
            i += block;
        }
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::common_prefix;
    use proptest::prelude::*;

    fn naive(a: &[u8], b: &[u8]) -> usize {
        a.iter().zip(b).take_while(|(x, y)| x == y).count()
    }

    #[test]
    fn edges() {
        assert_eq!(common_prefix(b"", b"abc"), 0);
        assert_eq!(common_prefix(b"abc", b"abc"), 3);
        assert_eq!(common_prefix(b"abc", b"abd"), 2);
        let mut long = vec![7u8; 10_000];
        let other = long.clone();
        long[9_000] = 8;
        assert_eq!(common_prefix(&long, &other), 9_000);
    }

    proptest! {
        #[test]
        fn matches_naive(a in proptest::collection::vec(0u8..3, 0..300), flip in 0usize..300) {
            let mut b = a.clone();
            if let Some(x) = b.get_mut(flip) { *x ^= 1; }
            prop_assert_eq!(common_prefix(&a, &b), naive(&a, &b));
        }
    }
}
