//! Fuzzes the RESP codec: framing, dispatch and vote digests of arbitrary bytes, as a client or
//! a replica could send them. Checks that nothing panics, that frames are never longer than the
//! input, that a request stream split anywhere frames into the same requests with one resumable
//! parser, and that a response parser that drops what it parsed as it goes (as the replica
//! reader does with an oversized frame) finds the same frame end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netdomain::codec::resp::Resp;
use netdomain::codec::{Codec, Dispatch, FixedClock, ReplyShape};

fuzz_target!(|data: &[u8]| {
    let codec = Resp::new(4096, None);
    // The shaped digests of arbitrary replica output never panic.
    for shape in [
        ReplyShape::Set,
        ReplyShape::Map,
        ReplyShape::NestedSet,
        ReplyShape::EachNestedSet,
        ReplyShape::ScanSet,
        ReplyShape::ScanMap,
    ] {
        let _ = codec.shaped_digest(shape, data);
    }
    // A session's client state takes any request stream without panicking, and what it sends
    // the replicas is well-formed.
    let mut client = codec.client(1);
    let clock = FixedClock(std::time::SystemTime::UNIX_EPOCH, std::time::Instant::now());
    let mut from = 0;
    while let Ok(Some(len)) = codec.request_len(&data[from..]) {
        match client.dispatch(&data[from..from + len], &clock) {
            Ok(Dispatch::Forward { request, .. }) => assert_eq!(codec.request_len(&request), Ok(Some(request.len()))),
            Ok(Dispatch::Unit(parts) | Dispatch::Ask { parts, .. }) => {
                for part in parts {
                    assert_eq!(codec.request_len(&part.request), Ok(Some(part.request.len())));
                }
            }
            _ => {}
        }
        from += len;
    }
    // Frame the whole input as a request stream, then again fed in two pieces.
    let mut whole = Vec::new();
    let mut at = 0;
    while let Ok(Some(len)) = codec.request_len(&data[at..]) {
        assert!(len > 0 && at + len <= data.len(), "request length out of bounds");
        if let Ok(Dispatch::Forward { request, .. }) = codec.dispatch(&data[at..at + len]) {
            // What replicas get must itself be one well-formed request.
            assert_eq!(codec.request_len(&request), Ok(Some(request.len())));
        }
        whole.push(&data[at..at + len]);
        at += len;
    }
    let cut = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut pieces = Vec::new();
    let mut parser = codec.request_parser();
    let mut buf: Vec<u8> = data[..cut].to_vec();
    let mut rest = &data[cut..];
    loop {
        match parser.parse(&buf) {
            Ok(Some(len)) => {
                pieces.push(buf[..len].to_vec());
                buf.drain(..len);
            }
            Ok(None) if !rest.is_empty() => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
            _ => break,
        }
    }
    let whole: Vec<Vec<u8>> = whole.into_iter().map(<[u8]>::to_vec).collect();
    assert_eq!(whole, pieces[..pieces.len().min(whole.len())].to_vec());

    if let Ok(Some(len)) = codec.response_len(data) {
        assert!(len > 0 && len <= data.len(), "response length out of bounds");
        let _ = codec.vote_digest(&data[..len]);
        // Fed in pieces of `step` bytes, dropping what was parsed: the same end.
        let step = (data[0] as usize % 13) + 1;
        let mut parser = codec.response_parser();
        let mut buf: Vec<u8> = Vec::new();
        let mut dropped = 0;
        for chunk in data.chunks(step) {
            buf.extend_from_slice(chunk);
            match parser.parse(&buf) {
                Ok(Some(end)) => {
                    assert_eq!(dropped + end, len, "resumable parse disagrees");
                    break;
                }
                Ok(None) => {
                    let n = parser.progress();
                    assert!(n <= buf.len(), "progress beyond the buffer");
                    buf.drain(..n);
                    parser.consumed(n);
                    dropped += n;
                }
                Err(e) => panic!("resumable parse failed where a whole parse did not: {e}"),
            }
        }
    }
});
