//! The normal form of an HTTP response: what its vote covers, and why two responses differ.
//!
//! RFC 9110 (HTTP semantics) says what a header means; RFC 9112 §9.6 and RFC 9110 §7.6.1 which
//! headers are hop-by-hop (they describe one connection, never the response).
//!
//! A response's vote covers:
//! - the status code;
//! - the headers that **count** ([`COUNTED`] by default: the ones that change what the response
//!   means or what a client does with it), compared by name case-insensitively, in any order,
//!   each value normalised where its syntax allows (`Content-Type`'s type and parameter names
//!   lower-cased and the parameters sorted; `Cache-Control`'s directives the same);
//!   repeated headers (`Set-Cookie`) as a set;
//! - the body, with the configured masks applied: JSON pointers (`/meta/timestamp`) whose
//!   values are blanked in a JSON body, and regular expressions whose matches are blanked in a
//!   text body. A masked body is voted as parsed JSON (so the order of an object's keys and the
//!   whitespace do not count either).
//!
//! Everything else is released as one replica sent it, unvoted: the headers that do not count,
//! and what the masks blank. The digest of a body that is not masked is computed as it comes,
//! whatever its size; a body the masks apply to is held up to `max_masked_body` bytes, beyond
//! which it is voted whole (its masks are not applied, and [`Normal::mask_skipped`] says so).
use std::collections::BTreeMap;
use std::fmt;

use regex::bytes::Regex;

/// Headers that count by default: those that change a response's meaning or what a client
/// does with it. Everything else (`Date`, `Server`, `ETag`, `Last-Modified`, `Age`,
/// `Accept-Ranges`, `Expires`, `X-*`...) is noise by default.
pub const COUNTED: &[&str] = &[
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
    "allow",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-location",
    "content-range",
    "content-security-policy",
    "content-type",
    "location",
    "proxy-authenticate",
    "refresh",
    "set-cookie",
    "strict-transport-security",
    "vary",
    "www-authenticate",
    "x-content-type-options",
    "x-frame-options",
];

/// Hop-by-hop headers, and the framing ones the body's digest covers already: never voted.
pub const NEVER_COUNTED: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the vote covers, as configured (`[http]`; see [`Rules::new`]).
#[derive(Clone, Debug, Default)]
pub struct RuleConfig {
    /// Headers that count besides (or, with `count_all_headers`, as well as) the defaults.
    pub count_headers: Vec<String>,
    /// Default counted headers that do not count here.
    pub ignore_headers: Vec<String>,
    /// Every header counts (but the hop-by-hop ones): to find out what differs between the
    /// replicas, before choosing masks.
    pub count_all_headers: bool,
    /// JSON pointers (RFC 6901) whose values are masked in JSON bodies.
    pub mask_json: Vec<String>,
    /// Regular expressions whose matches are masked in text bodies.
    pub mask_text: Vec<String>,
    /// The largest body the masks are applied to (a larger one is voted whole).
    pub max_masked_body: usize,
}

/// Why a rule was refused, with the configuration key to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// The key (`http.mask_json[1]`, say).
    pub key: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for RuleError {}

/// The compiled rules.
#[derive(Clone, Debug)]
pub struct Rules {
    counted: Vec<String>,
    ignored: Vec<String>,
    count_all: bool,
    mask_json: Vec<String>,
    mask_text: Vec<Regex>,
    max_masked_body: usize,
}

impl Rules {
    /// Compiles `config`; every problem names its key.
    pub fn new(config: &RuleConfig) -> Result<Rules, Vec<RuleError>> {
        let mut problems = Vec::new();
        let mut header_names = |list: &[String], key: &str| -> Vec<String> {
            let mut names = Vec::new();
            for (i, name) in list.iter().enumerate() {
                if name.is_empty() || !name.bytes().all(is_token_byte) {
                    problems.push(RuleError {
                        key: format!("{key}[{i}]"),
                        reason: format!("{name:?} is not a header name"),
                    });
                } else if NEVER_COUNTED.contains(&name.to_ascii_lowercase().as_str()) {
                    problems.push(RuleError {
                        key: format!("{key}[{i}]"),
                        reason: format!(
                            "{name} describes the connection or the framing, not the response: it is never voted"
                        ),
                    });
                } else {
                    names.push(name.to_ascii_lowercase());
                }
            }
            names
        };
        let added = header_names(&config.count_headers, "http.count_headers");
        let ignored = header_names(&config.ignore_headers, "http.ignore_headers");
        let mut counted: Vec<String> =
            COUNTED.iter().map(|s| s.to_string()).chain(added).filter(|h| !ignored.contains(h)).collect();
        counted.sort();
        counted.dedup();
        for (i, pointer) in config.mask_json.iter().enumerate() {
            let reason = if pointer.is_empty() {
                "the empty pointer would mask the whole body: nothing would be voted".to_string()
            } else if !pointer.starts_with('/') {
                format!("{pointer:?} is not a JSON pointer: it starts with '/' (\"/meta/timestamp\")")
            } else {
                continue;
            };
            problems.push(RuleError { key: format!("http.mask_json[{i}]"), reason });
        }
        let mut mask_text = Vec::new();
        for (i, pattern) in config.mask_text.iter().enumerate() {
            match Regex::new(pattern) {
                Ok(re) if re.is_match(b"") => problems.push(RuleError {
                    key: format!("http.mask_text[{i}]"),
                    reason: format!(
                        "{pattern:?} matches the empty string: it would mask nothing useful and everywhere"
                    ),
                }),
                Ok(re) => mask_text.push(re),
                Err(e) => problems.push(RuleError { key: format!("http.mask_text[{i}]"), reason: e.to_string() }),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Rules {
            counted,
            ignored,
            count_all: config.count_all_headers,
            mask_json: config.mask_json.clone(),
            mask_text,
            max_masked_body: config.max_masked_body,
        })
    }

    /// Whether header `name` (any case) counts.
    pub fn counts(&self, name: &str) -> bool {
        self.counts_lower(&name.to_ascii_lowercase())
    }

    /// [`counts`](Self::counts), for a name in lower case already.
    fn counts_lower(&self, name: &str) -> bool {
        if NEVER_COUNTED.contains(&name) {
            return false;
        }
        if self.count_all {
            return !self.ignored.iter().any(|i| i == name);
        }
        self.counted.binary_search_by(|c| c.as_str().cmp(name)).is_ok()
    }

    /// Starts the normal form of a response with this status and these headers; its body is
    /// added with [`NormalBuilder::body`] as it comes.
    pub fn response<'a, N, V>(&self, status: u16, headers: impl IntoIterator<Item = (N, V)>) -> NormalBuilder<'_>
    where
        N: AsRef<str> + 'a,
        V: AsRef<[u8]> + 'a,
    {
        let mut counted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut content_type = None;
        for (name, value) in headers {
            let name = name.as_ref().to_ascii_lowercase();
            let value = header_text(value.as_ref());
            if name == "content-type" {
                content_type = Some(value.to_ascii_lowercase());
            }
            if self.counts_lower(&name) {
                let value = normalise_value(&name, &value);
                // Repeated lines keep their order: it can mean something (the last Set-Cookie
                // of a name wins; Content-Encoding lines are codings in the order applied).
                counted.entry(name).or_default().push(value);
            }
        }
        let kind = match content_type.as_deref() {
            Some(t) if is_json(t) && !self.mask_json.is_empty() => BodyKind::Json,
            Some(t) if is_text(t) && !self.mask_text.is_empty() => BodyKind::Text,
            _ => BodyKind::Plain,
        };
        NormalBuilder {
            rules: self,
            status,
            headers: counted,
            kind,
            held: Vec::new(),
            hasher: blake3::Hasher::new(),
            len: 0,
            skipped: false,
        }
    }
}

/// How a body is voted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    /// Its bytes, digested as they come.
    Plain,
    /// Parsed as JSON, the masked pointers blanked.
    Json,
    /// Its bytes with the masks' matches blanked.
    Text,
}

/// A response's normal form under construction: its body comes in pieces.
#[derive(Debug)]
pub struct NormalBuilder<'r> {
    rules: &'r Rules,
    status: u16,
    headers: BTreeMap<String, Vec<String>>,
    kind: BodyKind,
    /// A body the masks apply to, held until its end (up to `max_masked_body`).
    held: Vec<u8>,
    hasher: blake3::Hasher,
    len: u64,
    skipped: bool,
}

impl NormalBuilder<'_> {
    /// Counts header `name` with `value` whatever the rules say: a HEAD response's
    /// Content-Length, say, which stands for the body it does not carry.
    pub fn count_header(&mut self, name: &str, value: &[u8]) {
        self.headers.entry(name.to_ascii_lowercase()).or_default().push(header_text(value));
    }

    /// The next piece of the body.
    pub fn body(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        if self.kind != BodyKind::Plain && !self.skipped {
            if self.held.len() + chunk.len() <= self.rules.max_masked_body {
                self.held.extend_from_slice(chunk);
                return;
            }
            // Too large to mask: voted whole, as it comes from here on.
            self.skipped = true;
            self.hasher.update(&std::mem::take(&mut self.held));
        }
        self.hasher.update(chunk);
    }

    /// The normal form, once the body ended.
    pub fn finish(mut self) -> Normal {
        let mut masked_json = None;
        if !self.skipped {
            match self.kind {
                BodyKind::Plain => {}
                BodyKind::Json => match parse_json_exactly(&self.held) {
                    Some(mut value) => {
                        for pointer in &self.rules.mask_json {
                            if let Some(slot) = value.pointer_mut(pointer) {
                                *slot = serde_json::Value::String(MASKED.into());
                            }
                        }
                        // serde_json's maps are ordered by key: one text for one value.
                        let canonical = serde_json::to_vec(&value).unwrap_or_default();
                        self.hasher.update(b"json\0");
                        self.hasher.update(&canonical);
                        masked_json = Some(value);
                    }
                    // Not JSON after all (or not one a parsed value stands for exactly): its
                    // bytes count.
                    None => {
                        self.hasher.update(&self.held);
                    }
                },
                BodyKind::Text => {
                    let mut text = std::mem::take(&mut self.held);
                    for re in &self.rules.mask_text {
                        text = re.replace_all(&text, MASKED.as_bytes()).into_owned();
                    }
                    self.hasher.update(b"text\0");
                    self.hasher.update(&text);
                }
            }
        }
        Normal {
            status: self.status,
            headers: self.headers,
            body: *self.hasher.finalize().as_bytes(),
            body_len: self.len,
            mask_skipped: self.skipped,
            json: masked_json,
        }
    }
}

/// What replaces a masked value.
const MASKED: &str = "\u{0}masked";

/// A response reduced to what its vote covers.
#[derive(Clone, Debug)]
pub struct Normal {
    /// The status code.
    pub status: u16,
    /// The headers that count, by lower-case name, their normalised values sorted.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The digest of the body as voted (masked, or its bytes).
    pub body: [u8; 32],
    /// The body's length in bytes, as sent.
    pub body_len: u64,
    /// The masks would have applied, but the body was larger than `max_masked_body`.
    pub mask_skipped: bool,
    /// A JSON body with its masks applied (for [`difference`] to say where two differ).
    json: Option<serde_json::Value>,
}

impl Normal {
    /// The digest the vote compares.
    pub fn digest(&self) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.status.to_be_bytes());
        for (name, values) in &self.headers {
            for value in values {
                // Length-prefixed: no two header lists hash alike by accident.
                for part in [name.as_bytes(), value.as_bytes()] {
                    hasher.update(&(part.len() as u64).to_be_bytes());
                    hasher.update(part);
                }
            }
        }
        hasher.update(b"body");
        hasher.update(&self.body);
        hasher.finalize()
    }
}

/// Where two responses' normal forms differ: the first difference, in the order status,
/// headers (by name), body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// The status codes.
    Status(u16, u16),
    /// A counted header (its values on each side; empty: absent).
    Header {
        /// Its lower-case name.
        name: String,
        /// One side's values.
        a: Vec<String>,
        /// The other's.
        b: Vec<String>,
    },
    /// The JSON bodies, at this pointer.
    Json {
        /// Where (RFC 6901).
        pointer: String,
    },
    /// The bodies (lengths).
    Body(u64, u64),
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Status(a, b) => write!(f, "status {a} against {b}"),
            Difference::Header { name, a, b } => {
                let show = |v: &Vec<String>| if v.is_empty() { "(absent)".to_string() } else { v.join(", ") };
                write!(f, "header {name}: {:?} against {:?}", show(a), show(b))
            }
            Difference::Json { pointer } => write!(f, "JSON body at {pointer}"),
            Difference::Body(a, b) if a == b => write!(f, "body ({a} bytes each)"),
            Difference::Body(a, b) => write!(f, "body ({a} bytes against {b})"),
        }
    }
}

/// The first place where `a` and `b` differ, or `None` if their votes agree.
pub fn difference(a: &Normal, b: &Normal) -> Option<Difference> {
    if a.status != b.status {
        return Some(Difference::Status(a.status, b.status));
    }
    let names: std::collections::BTreeSet<&String> = a.headers.keys().chain(b.headers.keys()).collect();
    for name in names {
        let (va, vb) =
            (a.headers.get(name).cloned().unwrap_or_default(), b.headers.get(name).cloned().unwrap_or_default());
        if va != vb {
            return Some(Difference::Header { name: name.clone(), a: va, b: vb });
        }
    }
    if a.body == b.body {
        return None;
    }
    if let (Some(ja), Some(jb)) = (&a.json, &b.json) {
        if let Some(pointer) = json_difference(ja, jb, String::new()) {
            return Some(Difference::Json { pointer });
        }
    }
    Some(Difference::Body(a.body_len, b.body_len))
}

/// The pointer to the first place where two JSON values differ.
pub fn json_difference(a: &serde_json::Value, b: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            let keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
            for key in keys {
                let here = format!("{at}/{}", escape(key));
                match (ma.get(key), mb.get(key)) {
                    (Some(x), Some(y)) => {
                        if let Some(p) = json_difference(x, y, here) {
                            return Some(p);
                        }
                    }
                    _ => return Some(here),
                }
            }
            None
        }
        (Value::Array(xa), Value::Array(xb)) => {
            for (i, (x, y)) in xa.iter().zip(xb).enumerate() {
                if let Some(p) = json_difference(x, y, format!("{at}/{i}")) {
                    return Some(p);
                }
            }
            (xa.len() != xb.len()).then(|| format!("{at}/{}", xa.len().min(xb.len())))
        }
        _ if a == b => None,
        _ => Some(if at.is_empty() { "/".to_string() } else { at }),
    }
}

/// A header value in the normal form the vote compares (`name` in any case).
pub fn normalise_header_value(name: &str, value: &str) -> String {
    normalise_value(&name.to_ascii_lowercase(), value)
}

/// A header value in a normal form where its syntax allows one.
fn normalise_value(name: &str, value: &str) -> String {
    match name {
        // type/subtype; param=value, ...: type and parameter names are case-insensitive, the
        // parameters' order means nothing, and so does `charset`'s case (RFC 9110 §8.3.1).
        "content-type" => {
            let mut parts = value.split(';').map(str::trim).filter(|p| !p.is_empty());
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let mut params: Vec<String> = parts
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => {
                        let k = k.trim().to_ascii_lowercase();
                        let v = v.trim().trim_matches('"');
                        let v = if k == "charset" { v.to_ascii_lowercase() } else { v.to_string() };
                        format!("{k}={v}")
                    }
                    None => p.to_ascii_lowercase(),
                })
                .collect();
            params.sort();
            std::iter::once(media).chain(params).collect::<Vec<_>>().join(";")
        }
        // Comma-separated lists (commas inside quoted strings are not separators). Cache-Control
        // directives and Vary's header names are case-insensitive and unordered (RFC 9111
        // §5.2, RFC 9110 §12.5.5); Allow's methods are unordered but case-sensitive; the order of
        // Content-Encoding is the order the codings were applied, and Content-Language's tags
        // are case-insensitive.
        "cache-control" | "vary" | "allow" | "content-encoding" | "content-language" => {
            let fold = name != "allow";
            let mut items: Vec<String> = split_list(value)
                .into_iter()
                .map(|i| match i.split_once('=') {
                    Some((k, v)) => {
                        let k = k.trim();
                        format!("{}={}", if fold { k.to_ascii_lowercase() } else { k.to_string() }, v.trim())
                    }
                    None if fold => i.to_ascii_lowercase(),
                    None => i.to_string(),
                })
                .collect();
            if name != "content-encoding" {
                items.sort();
            }
            items.join(",")
        }
        _ => value.to_string(),
    }
}

/// A header value as text: itself if it is UTF-8, else its bytes escaped (so that two values
/// that differ in bytes never compare equal).
fn header_text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.trim().to_string(),
        Err(_) => value.escape_ascii().to_string(),
    }
}

/// The items of a comma-separated list, trimmed; a comma inside a quoted string (with its
/// backslash escapes) is part of the item.
fn split_list(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(value[start..].trim());
    items.retain(|i| !i.is_empty());
    items
}

/// `bytes` parsed as JSON, if the parsed value stands for them exactly: no object with a key
/// twice (the parsed value keeps one of them, a client's parser may take the other).
/// Otherwise the bytes are voted as they are. Numbers keep their text (serde_json's
/// `arbitrary_precision`): a 20-digit id is compared digit for digit, never rounded, and
/// `100` and `1e2` differ.
fn parse_json_exactly(bytes: &[u8]) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    // Keys in the text, against keys in the value: a duplicate leaves fewer in the value.
    let keys_in_value = count_keys(&value);
    (keys_in_value == count_key_tokens(bytes)).then_some(value)
}

fn count_keys(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => items.iter().map(count_keys).sum(),
        serde_json::Value::Object(map) => map.len() + map.values().map(count_keys).sum::<usize>(),
        _ => 0,
    }
}

/// Object keys in JSON text: strings followed (after whitespace) by a colon.
fn count_key_tokens(bytes: &[u8]) -> usize {
    let mut keys = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            let mut j = i;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if bytes.get(j) == Some(&b':') {
                keys += 1;
            }
        } else {
            i += 1;
        }
    }
    keys
}

fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    media == "application/json" || media.ends_with("+json")
}

fn is_text(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    media.starts_with("text/") || is_json(media) || media.ends_with("+xml") || media == "application/xml"
}

/// RFC 9110 §5.6.2's `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests;
