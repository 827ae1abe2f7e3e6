//! Fuzzes the RESP codec: framing, dispatch and normalisation of arbitrary bytes, as a client or
//! a replica could send them. Checks that nothing panics, that frames are never longer than the
//! input, and that a request stream split anywhere frames into the same requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netdomain::codec::resp::Resp;
use netdomain::codec::{Codec, Dispatch};

fuzz_target!(|data: &[u8]| {
    let codec = Resp::new(4096, None);
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
    let mut buf: Vec<u8> = data[..cut].to_vec();
    let mut rest = &data[cut..];
    loop {
        match codec.request_len(&buf) {
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
        let _ = codec.normalise(&data[..len]);
    }
});
