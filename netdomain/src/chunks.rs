//! Queues of byte chunks waiting to be written, as both modes keep them for vectored writes.
use bytes::{Buf, Bytes};

/// Drops the first `n` bytes of the chunks in `out` (what one write took).
pub(crate) fn advance(out: &mut Vec<Bytes>, mut n: usize) {
    let mut done = 0;
    for chunk in out.iter_mut() {
        if n < chunk.len() {
            chunk.advance(n);
            break;
        }
        n -= chunk.len();
        done += 1;
    }
    out.drain(..done);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_across_chunks() {
        let mut out = vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de"), Bytes::from_static(b"f")];
        advance(&mut out, 4);
        assert_eq!(out, vec![Bytes::from_static(b"e"), Bytes::from_static(b"f")]);
        advance(&mut out, 2);
        assert!(out.is_empty());
    }
}
