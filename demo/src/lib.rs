//! Services to put behind resh in demos and tests.
//!
//! - `resh-echo` (`src/bin/resh-echo.rs`): a TCP echo server that can be told to misbehave in
//!   one replica: corrupt a byte of its output, close early, stall, flood, exit. The end-to-end
//!   tests run three of them behind `resh run` and check what the client gets.
//! - `resh-memtarget` (`src/bin/resh-memtarget.rs`): not a service: a process with a heap
//!   buffer of known content that reports its address and, on request, which of its bytes
//!   changed, so the memory bit-flip injection can be checked against a real process.
#![deny(unsafe_code)]
