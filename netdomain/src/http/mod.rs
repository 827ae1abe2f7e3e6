//! HTTP mode's pure parts: what a vote on an HTTP response covers.
//!
//! Diverse HTTP servers never answer byte for byte alike: `Date`, `Server`, `ETag` and the
//! order of headers differ, and JSON bodies carry timestamps or ids. Voting on the bytes would
//! find a fault in every answer; [`normal`] reduces a response to what changes its meaning
//! (the status, the headers that count, the body with its noise masked) and digests that, so
//! replicas are compared on what matters, and says which part differed when they disagree.
//!
//! [`ordered`] is HTTP mode for stateful services: every client's requests in one global
//! order, voted by one frame vote.
//!
//! [`noise`] compares sampled responses of the replicas and proposes what to leave out of the
//! vote (`resh http-noise`).
//!
//! [`normal`] and [`noise`] have no I/O and no clock: the shell, `session` (HTTP mode for stateless
//! services: a frame vote per client connection), frames the responses with hyper and hands
//! over the status, the headers and the body as it comes.
pub mod noise;
pub mod normal;
pub mod ordered;
pub(crate) mod session;
