//! `resh inject`: a small client of a running resh's admin API. It builds a `POST /inject`
//! request, sends it with the bearer token, and prints the injection record resh answers with.
//!
//! The client is plain HTTP/1.1 over a blocking `std` socket: one request per connection, a
//! fixed-length body, `Connection: close`. That is all the admin API needs, and it keeps the
//! command free of a runtime.
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::num::ParseIntError;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::Args;
use replicas::inject::{InjectKind, InjectRequest, InvalidField, MemRegion, UnknownName};

use crate::error::FileError;

/// `resh inject` arguments.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = "\
Examples:
  export RESH_ADMIN_TOKEN=$(cat /etc/resh/admin.token)
  resh inject --replica c --kind outflip --bits 2 --wait-ms 5000
  resh inject --replica b --kind memflip --region heap --seed 7
  resh inject --replica a --kind hang --duration-ms 3000
  resh inject --admin http://127.0.0.1:9091 --token-file admin.token --replica a --kind crash

Process faults (memflip, crash, hang) act at once and the record says what was done: for memflip
the address, region, bit, old and new byte of every flip. Data-path faults (outflip, inflip,
delay) are armed and fire on the replica's next bytes in a session; --wait-ms waits for that and
prints the fired record (offsets and bits), otherwise the armed one. GET /injections lists every
injection record.")]
pub struct InjectArgs {
    /// Where the admin API is, and its token.
    #[command(flatten)]
    pub access: AdminAccess,
    /// The replica to inject into (its name in the configuration).
    #[arg(long, value_name = "NAME")]
    pub replica: String,
    /// What to inject: outflip (bits in its next output bytes), inflip (bits in the next input
    /// delivered to it), memflip (bits in its process memory), crash (SIGKILL), hang (SIGSTOP,
    /// SIGCONT after --duration-ms), delay (hold its next output for --delay-ms).
    #[arg(long, value_parser = PossibleValuesParser::new(InjectKind::ALL.map(InjectKind::name)), value_name = "KIND")]
    pub kind: String,
    /// outflip, inflip, memflip: how many bits to flip [default: 1].
    #[arg(long, value_name = "K")]
    pub bits: Option<u32>,
    /// RNG seed that chooses bits and places; the record names the one used when omitted.
    #[arg(long)]
    pub seed: Option<u64>,
    /// outflip, inflip: spread the bits over the next N bytes [default: as few as hold them].
    #[arg(long, value_name = "N")]
    pub span_bytes: Option<u64>,
    /// memflip: which writable mappings may be hit [default: any].
    #[arg(long, value_parser = PossibleValuesParser::new(MemRegion::ALL.map(MemRegion::name)))]
    pub region: Option<String>,
    /// memflip: flip bits of the byte at this address (hex with 0x, or decimal).
    #[arg(long, value_parser = parse_address, value_name = "ADDR")]
    pub address: Option<u64>,
    /// hang: how long the process stays stopped [default: 1000].
    #[arg(long, value_name = "MS")]
    pub duration_ms: Option<u64>,
    /// delay: how long the replica's next output is held [default: 1000].
    #[arg(long, value_name = "MS")]
    pub delay_ms: Option<u64>,
    /// outflip, inflip, delay: wait up to MS for the injection to fire and print that record.
    #[arg(long, value_name = "MS")]
    pub wait_ms: Option<u64>,
}

/// An `--address` that is not a number (the user's input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not an address: {error}")]
pub struct AddressError {
    /// What was given.
    pub given: String,
    /// Why it does not parse.
    #[source]
    pub error: ParseIntError,
}

fn parse_address(s: &str) -> Result<u64, AddressError> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|error| AddressError { given: s.to_string(), error })
}

/// Why the arguments make no injection request (the user's input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `--kind` or `--region` names no kind or region.
    #[error(transparent)]
    Unknown(#[from] UnknownName),
    /// An option is out of range or does not apply to the kind; named as the option.
    #[error("--{}: {}", .0.field.replace('_', "-"), .0.reason)]
    Option(#[from] InvalidField),
}

/// Why an exchange with the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The user's input: `--admin` is not an `http://` URL.
    #[error("--admin: `{0}` must start with http:// (the admin API speaks plain HTTP on loopback)")]
    NotHttp(String),
    /// The user's input (or the system's resolver): the host does not resolve.
    #[error("--admin: cannot resolve `{authority}`: {error}")]
    Resolve {
        /// `host:port` from `--admin`.
        authority: String,
        /// The resolver's error.
        #[source]
        error: io::Error,
    },
    /// The user's input: the host resolves to nothing.
    #[error("--admin: `{0}` resolves to no address")]
    NoAddress(String),
    /// resh (or the user's `--admin`): nothing accepts the connection.
    #[error("cannot connect to the admin API at {addr}: {error}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// resh: it did not answer in time.
    #[error("the admin API did not answer within {0:?}")]
    Timeout(Duration),
    /// The system: the socket failed.
    #[error("cannot {what}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// resh: the answer has no end of header.
    #[error("the answer is not HTTP (no end of header)")]
    NotHttpAnswer,
    /// resh: the answer has no status line.
    #[error("the answer has no status line: {0}")]
    NoStatus(String),
}

/// Why `resh inject` got no answer from resh.
#[derive(Debug, thiserror::Error)]
pub enum InjectCommandError {
    /// The arguments make no request.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The user's `--token-file` cannot be read.
    #[error("--token-file: {0}")]
    TokenFile(#[source] FileError),
    /// resh itself: the request does not encode as JSON.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] serde_json::Error),
    /// The exchange with the admin API failed.
    #[error(transparent)]
    Post(#[from] PostError),
}

impl InjectArgs {
    /// The `POST /inject` body these arguments describe.
    pub fn request(&self) -> Result<InjectRequest, RequestError> {
        let kind: InjectKind = self.kind.parse()?;
        let region = self.region.as_deref().map(str::parse::<MemRegion>).transpose()?;
        let request = InjectRequest {
            bits: self.bits,
            seed: self.seed,
            span_bytes: self.span_bytes,
            region,
            address: self.address,
            duration_ms: self.duration_ms,
            delay_ms: self.delay_ms,
            wait_ms: self.wait_ms,
            ..InjectRequest::new(self.replica.clone(), kind)
        };
        request.check()?;
        Ok(request)
    }

    /// Sends the request these arguments describe; returns the status code and the body.
    pub fn exchange(&self) -> Result<(u16, String), InjectCommandError> {
        let request = self.request()?;
        let token = self.access.token().map_err(InjectCommandError::TokenFile)?;
        let body = serde_json::to_string(&request)?;
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(0));
        Ok(post(&self.access.admin, "/inject", token.as_deref(), &body, wait + Duration::from_secs(10))?)
    }
}

/// The admin API of a running resh and its bearer token, as the commands that change it
/// (`resh inject`, `resh reload`) take them.
#[derive(Args, Debug, Clone)]
pub struct AdminAccess {
    /// The admin API of the running resh.
    #[arg(long, env = "RESH_ADMIN", default_value = "http://127.0.0.1:9090", value_name = "URL")]
    pub admin: String,
    /// The admin bearer token (prefer the environment variable or --token-file: command lines
    /// are visible to other users).
    #[arg(long, env = "RESH_ADMIN_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the admin bearer token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl AdminAccess {
    /// The token: given, read from its file, or none.
    pub fn token(&self) -> Result<Option<String>, FileError> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.trim().to_string())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim_end().to_string()))
                .map_err(FileError::on("read", path)),
            (None, None) => Ok(None),
        }
    }
}

/// Runs `resh inject`: prints the record on standard output, or the reason on standard error.
pub fn main(args: &InjectArgs) -> ExitCode {
    match args.exchange() {
        Ok((200, body)) => {
            print!("{body}");
            // Asked to wait for a data-path fault to fire, and it did not: say so, and fail, so
            // that a script does not take an armed injection for one that happened.
            let still_armed = serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|r| r["status"] == "armed");
            if let (Some(ms), true) = (args.wait_ms, still_armed) {
                eprintln!(
                    "resh inject: nothing fired within --wait-ms {ms}: no bytes passed the replica's connection meanwhile; the injection stays armed and fires with the next ones (GET /injections shows it)"
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("resh inject: HTTP {status}: {}", body.trim_end());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("resh inject: {e}");
            ExitCode::from(2)
        }
    }
}

/// `GET path` of the admin API at `admin` (`http://host:port`); returns the status code and the
/// body.
pub fn get(admin: &str, path: &str, timeout: Duration) -> Result<(u16, String), PostError> {
    exchange(admin, "GET", path, None, None, timeout)
}

/// `POST path` with a JSON body to the admin API at `admin` (`http://host:port`); returns the
/// status code and the body.
pub fn post(
    admin: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), PostError> {
    exchange(admin, "POST", path, token, Some(body), timeout)
}

fn exchange(
    admin: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), PostError> {
    let authority =
        admin.strip_prefix("http://").ok_or_else(|| PostError::NotHttp(admin.to_string()))?.trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()
        .map_err(|error| PostError::Resolve { authority: authority.to_string(), error })?
        .next()
        .ok_or_else(|| PostError::NoAddress(authority.to_string()))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|error| PostError::Connect { addr, error })?;
    stream.set_read_timeout(Some(timeout)).map_err(|error| PostError::Io { what: "set the read timeout", error })?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).map_err(|error| PostError::Io { what: "send the request", error })?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|error| match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => PostError::Timeout(timeout),
        _ => PostError::Io { what: "read the answer", error },
    })?;
    parse_response(&response)
}

/// Splits an HTTP/1.1 response into status code and body (fixed-length bodies, as resh sends).
fn parse_response(response: &[u8]) -> Result<(u16, String), PostError> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(PostError::NotHttpAnswer)?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| PostError::NoStatus(head.lines().next().unwrap_or("").to_string()))?;
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
    });
    let body = match length {
        Some(n) => body.get(..n).unwrap_or(body),
        None => body,
    };
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed() {
        let r = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nnope!extra";
        assert_eq!(parse_response(r).ok(), Some((401, "nope!".to_string())));
        assert!(matches!(parse_response(b"garbage"), Err(PostError::NotHttpAnswer)));
    }

    #[test]
    fn addresses_parse_in_hex_and_decimal() {
        assert_eq!(parse_address("0x10"), Ok(16));
        assert_eq!(parse_address("16"), Ok(16));
        assert!(parse_address("0xzz").is_err());
    }
}
