//! Services to put behind resh in demos and tests.
//!
//! - `resh-echo` (`src/bin/resh-echo.rs`): a TCP echo server that can be told to misbehave in
//!   one replica: corrupt a byte of its output, close early, stall, flood, exit. The end-to-end
//!   tests run three of them behind `resh run` and check what the client gets.
#![deny(unsafe_code)]
