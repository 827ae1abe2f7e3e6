//! Framing codecs for ordered mode: they split client input into requests and replica output
//! into responses, without I/O.
//!
//! A codec answers four questions, each on plain byte slices:
//! - how long is the complete request (or response) at the front of this buffer, if there is
//!   one yet ([`Codec::request_len`], [`Codec::response_len`]);
//! - what to do with a request: send it through the global order to every replica, answer it
//!   locally (a command ordered mode cannot serve), or close ([`Codec::dispatch`]);
//! - which bytes of a response the vote compares ([`Codec::normalise`]): diverse versions may
//!   legitimately differ in details (error message wording, for one), and those are left out;
//! - what to answer a malformed request ([`Codec::protocol_error`]).
//!
//! RESP (Redis) is the first codec; line-based, length-prefixed and HTTP/1.1 codecs fit the
//! same trait.
use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

pub mod resp;

/// Why input could not be framed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// What to do with one complete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Send these bytes (the request, possibly rewritten into a canonical form) through the
    /// global order. `logged` requests are recorded for replaying to a replica that rejoins;
    /// read-only ones need not be.
    Forward {
        /// The request as the replicas get it.
        request: Bytes,
        /// Whether it may change state (and so must be replayed to a rejoining replica).
        logged: bool,
    },
    /// Answer locally with these bytes; the replicas never see the request.
    Reply(Bytes),
    /// Answer with these bytes, then close the connection.
    Close(Bytes),
    /// Nothing to do (e.g. an empty request).
    Ignore,
}

/// A framing codec. See the module documentation.
pub trait Codec: Send + Sync + fmt::Debug {
    /// The protocol's name (`resp`).
    fn name(&self) -> &'static str;
    /// Length of the complete request at the front of `buf`; `None` if more bytes are needed.
    fn request_len(&self, buf: &[u8]) -> Result<Option<usize>, ProtocolError>;
    /// Length of the complete response at the front of `buf`; `None` if more bytes are needed.
    fn response_len(&self, buf: &[u8]) -> Result<Option<usize>, ProtocolError>;
    /// What to do with one complete request (as delimited by `request_len`).
    fn dispatch(&self, request: &[u8]) -> Result<Dispatch, ProtocolError>;
    /// The part of a response the vote compares.
    fn normalise<'a>(&self, response: &'a [u8]) -> Cow<'a, [u8]>;
    /// The answer to a malformed request (the connection is closed after it).
    fn protocol_error(&self, error: &ProtocolError) -> Bytes;
    /// The answer to a request whose vote was undecidable, sent before the reset when the
    /// protocol has a way to say so; `None` to reset without a word.
    fn undecidable(&self) -> Option<Bytes> {
        None
    }
}
