//! Services to put behind resh in demos and tests.
//!
//! - `resh-kv` (`src/bin/resh-kv.rs`, async Rust), `resh-kv-threads`
//!   (`src/bin/resh-kv-threads.rs`, a thread per connection) and `kv.py` (Python asyncio): three
//!   versions of a small Redis-compatible key-value service, written independently, that answer
//!   their commands with redis-server 7's reply bytes, errors included (checked against
//!   redis-server by `tests/demo_services.rs`). KEYS lists keys sorted, so that the versions agree
//!   with each other; that and TYPE, PTTL, PEXPIRETIME, RPUSH, FLUSHALL and DBSIZE let resh rebuild one version
//!   from another by a logical copy.
//! - `resh-web` (`src/bin/resh-web.rs`, hyper): our version of the web demo's small site and JSON
//!   API, beside nginx and lighttpd (`web/`: the site and their configurations); written to
//!   answer what they answer, otherwise on its own terms (the site in memory, its own routes).
//!   It can carry a planted fault: a wrong price, a flooding or a trickling body.
//! - `resh-echo` (`src/bin/resh-echo.rs`): a TCP echo server that can be told to misbehave in
//!   one replica: corrupt a byte of its output, close early, stall, flood, exit. The end-to-end
//!   tests run three of them behind `resh run` and check what the client gets.
//! - `resh-memtarget` (`src/bin/resh-memtarget.rs`): not a service: a process with a heap
//!   buffer of known content that reports its address and, on request, which of its bytes
//!   changed, so the memory bit-flip injection can be checked against a real process.
#![deny(unsafe_code)]
