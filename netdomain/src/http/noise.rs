//! What differs between replicas' responses to the same requests, and which masks would leave
//! it out of HTTP mode's vote: the pure part of `resh http-noise`.
//!
//! The tool sends each sampled request to every replica directly, several rounds apart, and
//! hands the responses ([`Sample`]) to [`analyse`], which reports:
//! - headers whose values differ between the samples of a request (between replicas, or
//!   between rounds of one replica: a clock, a counter), and whether the default vote counts
//!   them (those need `ignore_headers`; the others are noise the vote already leaves out);
//! - JSON bodies: every pointer (RFC 6901) where the values differ (`mask_json`);
//! - text bodies: the differing words, generalised to a regular expression (digits become
//!   `\d+`; `mask_text`), when the differences are few and short;
//! - what no mask should cover: different statuses, bodies that differ throughout, binary
//!   bodies.
//!
//! [`Report::proposal`] writes the masks as an `[http]` snippet for the user to review: what a
//! mask covers is released from one replica unvoted.
use std::collections::{BTreeMap, BTreeSet};

use super::normal::{normalise_header_value, NEVER_COUNTED};
use super::normal::{RuleConfig, Rules};

/// One response of one replica to one sampled request.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The replica's name.
    pub replica: String,
    /// The request (`GET /path`).
    pub request: String,
    /// The status code.
    pub status: u16,
    /// The headers, as sent.
    pub headers: Vec<(String, String)>,
    /// The body (the tool may cut it short; the same for every sample).
    pub body: Vec<u8>,
}

impl Sample {
    fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| normalise_header_value(name, v))
            .collect()
    }

    fn content_type(&self) -> String {
        self.header("content-type").first().cloned().unwrap_or_default()
    }
}

/// A header whose values differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderNoise {
    /// Its lower-case name.
    pub name: String,
    /// The default vote counts it (it needs `ignore_headers`, if it is noise).
    pub counted: bool,
    /// The requests it differed on.
    pub requests: BTreeSet<String>,
    /// Some of the values seen: (replica, value; `(absent)` when missing).
    pub examples: Vec<(String, String)>,
    /// It differed between rounds of one replica (a clock, a counter), not only between
    /// replicas.
    pub changes_over_time: bool,
}

/// A body part that differs, and the mask that would cover it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyNoise {
    /// A JSON pointer (`mask_json`) or a regular expression (`mask_text`).
    pub mask: String,
    /// The requests it differed on.
    pub requests: BTreeSet<String>,
    /// An example of the values: (replica, value).
    pub examples: Vec<(String, String)>,
}

/// A difference no mask should cover: the replicas disagree on what the answer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    /// The request.
    pub request: String,
    /// What differs.
    pub what: String,
}

/// What [`analyse`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The requests sampled.
    pub requests: usize,
    /// The responses compared.
    pub samples: usize,
    /// Headers that differ, by name.
    pub headers: Vec<HeaderNoise>,
    /// JSON pointers whose values differ.
    pub json: Vec<BodyNoise>,
    /// Text that differs, as regular expressions.
    pub text: Vec<BodyNoise>,
    /// What no mask should cover.
    pub disagreements: Vec<Disagreement>,
}

/// At most this many differing spans in a text body are generalised into masks; more means
/// the bodies differ in substance.
const MAX_TEXT_SPANS: usize = 4;
/// A differing span longer than this is content, not a timestamp or an id.
const MAX_SPAN: usize = 64;

/// Compares the samples of each request (see the module documentation).
pub fn analyse(samples: &[Sample]) -> Report {
    let defaults = Rules::new(&RuleConfig::default()).ok();
    let mut by_request: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_request.entry(&s.request).or_default().push(s);
    }
    let mut report = Report { requests: by_request.len(), samples: samples.len(), ..Report::default() };
    let mut headers: BTreeMap<String, HeaderNoise> = BTreeMap::new();
    let mut json: BTreeMap<String, BodyNoise> = BTreeMap::new();
    let mut text: BTreeMap<String, BodyNoise> = BTreeMap::new();
    for (request, group) in by_request {
        let Some(first) = group.first() else { continue };
        let statuses: BTreeSet<u16> = group.iter().map(|s| s.status).collect();
        if statuses.len() > 1 {
            let seen: Vec<String> = group.iter().map(|s| format!("{} {}", s.replica, s.status)).collect();
            report.disagreements.push(Disagreement {
                request: request.to_string(),
                what: format!("statuses differ: {}", dedup(seen).join(", ")),
            });
            continue;
        }
        // Headers.
        let names: BTreeSet<String> =
            group.iter().flat_map(|s| s.headers.iter().map(|(n, _)| n.to_ascii_lowercase())).collect();
        for name in names.into_iter().filter(|n| !NEVER_COUNTED.contains(&n.as_str())) {
            let values: Vec<(String, String)> = group
                .iter()
                .map(|s| {
                    let v = s.header(&name);
                    (s.replica.clone(), if v.is_empty() { "(absent)".to_string() } else { v.join(", ") })
                })
                .collect();
            if values.iter().all(|(_, v)| *v == values[0].1) {
                continue;
            }
            let mut per_replica: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for (r, v) in &values {
                per_replica.entry(r).or_default().insert(v);
            }
            let noise = headers.entry(name.clone()).or_insert_with(|| HeaderNoise {
                counted: defaults.as_ref().is_some_and(|d| d.counts(&name)),
                name: name.clone(),
                requests: BTreeSet::new(),
                examples: Vec::new(),
                changes_over_time: false,
            });
            noise.requests.insert(request.to_string());
            noise.changes_over_time |= per_replica.values().any(|v| v.len() > 1);
            for example in values {
                if noise.examples.len() < 3 && !noise.examples.iter().any(|(_, v)| *v == example.1) {
                    noise.examples.push(example);
                }
            }
        }
        // Bodies.
        if group.iter().all(|s| s.body == first.body) {
            continue;
        }
        let content_type = first.content_type();
        if content_type.contains("json") {
            let parsed: Option<Vec<serde_json::Value>> =
                group.iter().map(|s| serde_json::from_slice(&s.body).ok()).collect();
            if let Some(values) = parsed {
                let mut pointers = BTreeSet::new();
                for v in &values[1..] {
                    json_differences(&values[0], v, String::new(), &mut pointers);
                }
                if pointers.remove("") {
                    report.disagreements.push(Disagreement {
                        request: request.to_string(),
                        what: "the JSON bodies differ as a whole: not noise a mask should cover".into(),
                    });
                    continue;
                }
                if pointers.is_empty() {
                    report.disagreements.push(Disagreement {
                        request: request.to_string(),
                        what: "the JSON bodies differ only in formatting (key order, whitespace): they are voted as bytes unless a mask_json applies".into(),
                    });
                }
                for pointer in pointers {
                    let noise = json.entry(pointer.clone()).or_insert_with(|| BodyNoise {
                        mask: pointer.clone(),
                        requests: BTreeSet::new(),
                        examples: Vec::new(),
                    });
                    noise.requests.insert(request.to_string());
                    for (s, v) in group.iter().zip(&values) {
                        if noise.examples.len() < 3 {
                            let shown = v.pointer(&pointer).map_or("(absent)".to_string(), |x| x.to_string());
                            if !noise.examples.iter().any(|(_, e)| *e == shown) {
                                noise.examples.push((s.replica.clone(), shown));
                            }
                        }
                    }
                }
                continue;
            }
        }
        let textual = content_type.starts_with("text/") || content_type.contains("xml") || content_type.is_empty();
        let spans = if textual { text_spans(group.iter().map(|s| s.body.as_slice())) } else { None };
        match spans {
            Some(spans) => {
                for (pattern, example) in spans {
                    let noise = text.entry(pattern.clone()).or_insert_with(|| BodyNoise {
                        mask: pattern.clone(),
                        requests: BTreeSet::new(),
                        examples: Vec::new(),
                    });
                    noise.requests.insert(request.to_string());
                    if noise.examples.len() < 3 {
                        noise.examples.push((first.replica.clone(), example));
                    }
                }
            }
            None => {
                let seen: Vec<String> = group.iter().map(|s| format!("{} {} bytes", s.replica, s.body.len())).collect();
                report.disagreements.push(Disagreement {
                    request: request.to_string(),
                    what: format!(
                        "the bodies differ in substance, not in a few short values ({}): not noise a mask should cover",
                        dedup(seen).join(", ")
                    ),
                });
            }
        }
    }
    report.headers = headers.into_values().collect();
    report.json = json.into_values().collect();
    report.text = text.into_values().collect();
    report
}

fn dedup(mut items: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items.retain(|i| seen.insert(i.clone()));
    items
}

/// Every pointer where `a` and `b` differ (a value that differs as a whole: its pointer).
/// Unlike [`super::normal::json_difference`], which finds the first difference to name in an
/// error, this collects what masks must cover: every place, and an array whose length
/// differs as a whole (masking its extra elements would not make two lists of different
/// lengths agree).
fn json_differences(a: &serde_json::Value, b: &serde_json::Value, at: String, out: &mut BTreeSet<String>) {
    use serde_json::Value;
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            let keys: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
            for key in keys {
                let here = format!("{at}/{}", escape(key));
                match (ma.get(key), mb.get(key)) {
                    (Some(x), Some(y)) => json_differences(x, y, here, out),
                    _ => {
                        out.insert(here);
                    }
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) if xa.len() == xb.len() => {
            for (i, (x, y)) in xa.iter().zip(xb).enumerate() {
                json_differences(x, y, format!("{at}/{i}"), out);
            }
        }
        _ if a == b => {}
        _ => {
            // At the top ("", the whole document) this is no noise: the caller says so.
            out.insert(at);
        }
    }
}

/// The short spans where text bodies differ from the first, as regular expressions with an
/// example each; `None` when they differ in more or longer places than noise does.
fn text_spans<'a>(bodies: impl Iterator<Item = &'a [u8]>) -> Option<Vec<(String, String)>> {
    let bodies: Vec<&[u8]> = bodies.collect();
    let first = bodies.first()?;
    let first_tokens = tokens(first);
    let mut patterns: BTreeMap<String, String> = BTreeMap::new();
    for other in &bodies[1..] {
        let other_tokens = tokens(other);
        if other_tokens.len() != first_tokens.len() {
            return None;
        }
        let mut differing = 0;
        for (x, y) in first_tokens.iter().zip(&other_tokens) {
            if x == y {
                continue;
            }
            differing += 1;
            if differing > MAX_TEXT_SPANS || x.len() > MAX_SPAN || y.len() > MAX_SPAN {
                return None;
            }
            let (px, py) = (shape(x), shape(y));
            if px != py {
                return None;
            }
            patterns.entry(px).or_insert_with(|| String::from_utf8_lossy(x).into_owned());
        }
    }
    Some(patterns.into_iter().collect())
}

/// A body cut into words (runs of letters, digits and `:._-+`) and the single bytes between.
fn tokens(body: &[u8]) -> Vec<&[u8]> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b":._-+".contains(&b);
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let start = i;
        if word(body[i]) {
            while i < body.len() && word(body[i]) {
                i += 1;
            }
        } else {
            i += 1;
        }
        out.push(&body[start..i]);
    }
    out
}

/// A word's shape as a regular expression: digit runs become `\d+`, hexadecimal-looking runs
/// of letters and digits `[0-9a-f]+`, the rest literal.
fn shape(word: &[u8]) -> String {
    let text = String::from_utf8_lossy(word);
    let hexish =
        text.len() >= 8 && text.bytes().all(|b| b.is_ascii_hexdigit()) && text.bytes().any(|b| b.is_ascii_digit());
    if hexish {
        return if text.bytes().any(|b| b.is_ascii_uppercase()) { "[0-9A-Fa-f]+".into() } else { "[0-9a-f]+".into() };
    }
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push_str(r"\d+");
        } else {
            out.push_str(&regex::escape(&c.to_string()));
        }
    }
    out
}

impl Report {
    /// The masks as an `[http]` snippet, with a comment per entry saying where it differed.
    pub fn proposal(&self) -> String {
        let mut out = String::from(
            "[http]\n# Proposed by resh http-noise: review each entry. What an ignored header or a mask\n# covers is released from one replica, unvoted.\n",
        );
        let ignore: Vec<&HeaderNoise> = self.headers.iter().filter(|h| h.counted).collect();
        if !ignore.is_empty() {
            out.push_str("ignore_headers = [\n");
            for h in ignore {
                out.push_str(&format!("  {},  # differed on {}\n", toml_string(&h.name), list(&h.requests)));
            }
            out.push_str("]\n");
        }
        if !self.json.is_empty() {
            out.push_str("mask_json = [\n");
            for j in &self.json {
                out.push_str(&format!("  {},  # differed on {}\n", toml_string(&j.mask), list(&j.requests)));
            }
            out.push_str("]\n");
        }
        if !self.text.is_empty() {
            out.push_str("mask_text = [\n");
            for t in &self.text {
                out.push_str(&format!("  {},  # differed on {}\n", toml_string(&t.mask), list(&t.requests)));
            }
            out.push_str("]\n");
        }
        out
    }

    /// Whether the default vote would find the replicas in agreement on every sample.
    pub fn quiet_by_default(&self) -> bool {
        self.disagreements.is_empty()
            && self.json.is_empty()
            && self.text.is_empty()
            && self.headers.iter().all(|h| !h.counted)
    }
}

/// `text` as a TOML string (escaped as TOML wants: a key with a control character or a
/// regular expression's backslashes come out right).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn list(requests: &BTreeSet<String>) -> String {
    let shown: Vec<&str> = requests.iter().take(3).map(String::as_str).collect();
    let more = requests.len().saturating_sub(3);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(replica: &str, request: &str, headers: &[(&str, &str)], body: &str) -> Sample {
        Sample {
            replica: replica.into(),
            request: request.into(),
            status: 200,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn headers_that_differ_are_found_and_only_counted_ones_proposed() {
        let samples = [
            sample(
                "a",
                "GET /",
                &[("Date", "Mon, 01"), ("Cache-Control", "max-age=60"), ("Content-Type", "text/html")],
                "x",
            ),
            sample(
                "b",
                "GET /",
                &[("date", "Mon, 02"), ("cache-control", "max-age=120"), ("content-type", "text/html")],
                "x",
            ),
            sample(
                "a",
                "GET /",
                &[("Date", "Mon, 03"), ("Cache-Control", "max-age=60"), ("Content-Type", "TEXT/HTML")],
                "x",
            ),
        ];
        let report = analyse(&samples);
        let names: Vec<(&str, bool, bool)> =
            report.headers.iter().map(|h| (h.name.as_str(), h.counted, h.changes_over_time)).collect();
        assert_eq!(names, [("cache-control", true, false), ("date", false, true)]);
        assert!(!report.quiet_by_default());
        let proposal = report.proposal();
        assert!(proposal.contains("ignore_headers = [\n  \"cache-control\",  # differed on GET /\n]"), "{proposal}");
        assert!(!proposal.contains("date"), "{proposal}");
    }

    #[test]
    fn json_fields_that_differ_become_pointers() {
        let samples = [
            sample(
                "a",
                "GET /api",
                &[("Content-Type", "application/json")],
                r#"{"id": 1, "meta": {"at": 100, "v": "x"}, "l": [1, 2]}"#,
            ),
            sample(
                "b",
                "GET /api",
                &[("Content-Type", "application/json")],
                r#"{"meta": {"v": "x", "at": 101}, "id": 1, "l": [1, 3]}"#,
            ),
        ];
        let report = analyse(&samples);
        let masks: Vec<&str> = report.json.iter().map(|j| j.mask.as_str()).collect();
        assert_eq!(masks, ["/l/1", "/meta/at"]);
        // A key with a control character is still a valid TOML string in the snippet.
        let odd = [
            sample("a", "GET /o", &[("Content-Type", "application/json")], "{\"k\\u0001\": 1}"),
            sample("b", "GET /o", &[("Content-Type", "application/json")], "{\"k\\u0001\": 2}"),
        ];
        let proposal: toml::Value = toml::from_str(&analyse(&odd).proposal()).expect("the snippet is TOML");
        assert_eq!(proposal["http"]["mask_json"][0].as_str(), Some("/k\u{1}"));
        assert_eq!(
            report.json[1].examples,
            [("a".to_string(), "100".to_string()), ("b".to_string(), "101".to_string())]
        );
        assert!(report.proposal().contains("mask_json = [\n  \"/l/1\",  # differed on GET /api\n  \"/meta/at\","));
    }

    #[test]
    fn short_text_differences_become_patterns_and_long_ones_disagreements() {
        let samples = [
            sample("a", "GET /t", &[("Content-Type", "text/html")], "<p>Generated at 12:00:01 by node 7</p>"),
            sample("b", "GET /t", &[("Content-Type", "text/html")], "<p>Generated at 12:00:02 by node 7</p>"),
            sample("a", "GET /u", &[("Content-Type", "text/html")], "<p>one text</p>"),
            sample("b", "GET /u", &[("Content-Type", "text/html")], "<p>another text entirely, longer</p>"),
        ];
        let report = analyse(&samples);
        let masks: Vec<&str> = report.text.iter().map(|t| t.mask.as_str()).collect();
        assert_eq!(masks, [r"\d+:\d+:\d+"]);
        assert_eq!(report.disagreements.len(), 1);
        assert_eq!(report.disagreements[0].request, "GET /u");
        // The snippet is TOML that says the same pattern.
        let proposal: toml::Value = toml::from_str(&report.proposal()).expect("the snippet is TOML");
        assert_eq!(proposal["http"]["mask_text"][0].as_str(), Some(r"\d+:\d+:\d+"), "{}", report.proposal());
        // The proposed pattern is a valid mask that covers the difference.
        let rules = Rules::new(&RuleConfig {
            mask_text: vec![masks[0].to_string()],
            max_masked_body: 1 << 20,
            ..RuleConfig::default()
        });
        assert!(rules.is_ok());
    }

    #[test]
    fn different_statuses_are_no_noise() {
        let mut b = sample("b", "GET /x", &[], "");
        b.status = 404;
        let report = analyse(&[sample("a", "GET /x", &[], ""), b]);
        assert_eq!(report.disagreements[0].what, "statuses differ: a 200, b 404");
    }

    #[test]
    fn agreeing_replicas_are_quiet() {
        let samples = [
            sample("a", "GET /", &[("Server", "nginx"), ("Content-Type", "text/html")], "same"),
            sample("b", "GET /", &[("Server", "lighttpd"), ("Content-Type", "text/html")], "same"),
        ];
        let report = analyse(&samples);
        assert!(report.quiet_by_default());
        assert_eq!(report.headers.len(), 1);
    }
}
