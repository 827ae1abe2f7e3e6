//! The normal form on responses as diverse servers send them.
use super::*;

fn rules(config: RuleConfig) -> Rules {
    Rules::new(&RuleConfig { max_masked_body: 1 << 20, ..config }).expect("valid rules")
}

fn normal(rules: &Rules, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Normal {
    let mut builder = rules.response(status, headers.iter().map(|(n, v)| (*n, v.as_bytes())));
    // In two pieces, as a body comes.
    let (first, rest) = body.split_at(body.len() / 2);
    builder.body(first);
    builder.body(rest);
    builder.finish()
}

/// nginx's and lighttpd's answers to the same request: other servers, dates, tags, header
/// order and case; the same page. They agree.
#[test]
fn diverse_servers_agree_on_the_same_page() {
    let r = rules(RuleConfig::default());
    let nginx = normal(
        &r,
        200,
        &[
            ("Server", "nginx/1.22.1"),
            ("Date", "Wed, 02 Dec 2026 10:00:00 GMT"),
            ("Content-Type", "text/html; charset=UTF-8"),
            ("Content-Length", "5"),
            ("Last-Modified", "Tue, 01 Dec 2026 09:00:00 GMT"),
            ("Connection", "keep-alive"),
            ("ETag", "\"6565-5\""),
            ("Accept-Ranges", "bytes"),
        ],
        b"hello",
    );
    let lighttpd = normal(
        &r,
        200,
        &[
            ("content-type", "text/html;charset=utf-8"),
            ("etag", "\"1234567\""),
            ("last-modified", "Tue, 01 Dec 2026 09:00:01 GMT"),
            ("content-length", "5"),
            ("date", "Wed, 02 Dec 2026 10:00:01 GMT"),
            ("server", "lighttpd/1.4.69"),
        ],
        b"hello",
    );
    assert_eq!(difference(&nginx, &lighttpd), None);
    assert_eq!(nginx.digest(), lighttpd.digest());
}

#[test]
fn what_counts_differs_and_says_where() {
    let r = rules(RuleConfig::default());
    let base = |status, ct: &str, body: &[u8]| normal(&r, status, &[("Content-Type", ct)], body);
    let page = base(200, "text/html", b"hello");
    assert_eq!(difference(&page, &base(404, "text/html", b"hello")), Some(Difference::Status(200, 404)));
    let other_type = base(200, "text/plain", b"hello");
    assert_eq!(
        difference(&page, &other_type).map(|d| d.to_string()),
        Some("header content-type: \"text/html\" against \"text/plain\"".into())
    );
    assert_eq!(difference(&page, &base(200, "text/html", b"hellO")), Some(Difference::Body(5, 5)));
    assert_ne!(page.digest(), base(200, "text/html", b"hellO").digest());
    // A Location missing on one side.
    let moved = normal(&r, 301, &[("Location", "/new")], b"");
    let nowhere = normal(&r, 301, &[], b"");
    assert_eq!(
        difference(&moved, &nowhere),
        Some(Difference::Header { name: "location".into(), a: vec!["/new".into()], b: vec![] })
    );
}

#[test]
fn listed_directives_compare_in_any_order_but_repeated_lines_keep_theirs() {
    let r = rules(RuleConfig::default());
    let a = normal(
        &r,
        200,
        &[("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2"), ("Cache-Control", "no-cache, Max-Age=0")],
        b"",
    );
    let b = normal(
        &r,
        200,
        &[("cache-control", "max-age=0,no-cache"), ("set-cookie", "a=1; Path=/"), ("set-cookie", "b=2")],
        b"",
    );
    assert_eq!(difference(&a, &b), None);
    // The last Set-Cookie of a name wins: their order is meaning.
    let first = normal(&r, 200, &[("Set-Cookie", "a=1"), ("Set-Cookie", "a=2")], b"");
    let last = normal(&r, 200, &[("Set-Cookie", "a=2"), ("Set-Cookie", "a=1")], b"");
    assert!(difference(&first, &last).is_some());
    // Content-Encoding's order is the codings' order, in one line or several.
    let gzip_br = normal(&r, 200, &[("Content-Encoding", "gzip, br")], b"x");
    let br_gzip = normal(&r, 200, &[("Content-Encoding", "br, gzip")], b"x");
    assert!(matches!(difference(&gzip_br, &br_gzip), Some(Difference::Header { .. })));
    let lines = normal(&r, 200, &[("Content-Encoding", "gzip"), ("Content-Encoding", "br")], b"x");
    let swapped = normal(&r, 200, &[("Content-Encoding", "br"), ("Content-Encoding", "gzip")], b"x");
    assert!(difference(&lines, &swapped).is_some());
    // A comma inside a quoted string does not split a directive.
    let quoted = normal(&r, 200, &[("Cache-Control", "no-cache=\"a, b\", private")], b"");
    let moved = normal(&r, 200, &[("Cache-Control", "no-cache=\"a, private, b\"")], b"");
    assert!(difference(&quoted, &moved).is_some());
    // Methods are case-sensitive.
    let get = normal(&r, 405, &[("Allow", "GET, POST")], b"");
    assert_eq!(difference(&get, &normal(&r, 405, &[("Allow", "POST,GET")], b"")), None);
    assert!(difference(&get, &normal(&r, 405, &[("Allow", "get, post")], b"")).is_some());
}

#[test]
fn header_values_that_are_not_utf8_compare_by_their_bytes() {
    let r = rules(RuleConfig::default());
    let mut a = r.response(200, [("Content-Disposition", &b"attachment; filename=caf\xe9"[..])]);
    a.body(b"");
    let mut b = r.response(200, [("Content-Disposition", &b"attachment; filename=caf\xe8"[..])]);
    b.body(b"");
    assert!(difference(&a.finish(), &b.finish()).is_some());
}

#[test]
fn json_numbers_vote_exactly_and_duplicate_keys_as_bytes() {
    let r = rules(RuleConfig { mask_json: vec!["/t".into()], ..RuleConfig::default() });
    let ct = [("Content-Type", "application/json")];
    // Two ids beyond a double's precision: numbers keep their text (serde_json's
    // arbitrary_precision), so they differ; and a long number where a mask is counts for
    // nothing.
    let a = normal(&r, 200, &ct, br#"{"t": 1, "id": 123456789012345678901234}"#);
    let b = normal(&r, 200, &ct, br#"{"t": 1, "id": 123456789012345678901235}"#);
    assert_eq!(difference(&a, &b), Some(Difference::Json { pointer: "/id".into() }));
    let a = normal(&r, 200, &ct, br#"{"t": 1796000000000000001, "id": 1}"#);
    let b = normal(&r, 200, &ct, br#"{"id": 1, "t": 1796000000000000002}"#);
    assert_eq!(difference(&a, &b), None);
    // The same number written otherwise is voted as written (a conservative choice).
    let a = normal(&r, 200, &ct, br#"{"t": 1, "id": 100}"#);
    let b = normal(&r, 200, &ct, br#"{"t": 1, "id": 1e2}"#);
    assert!(difference(&a, &b).is_some());
    // A duplicate key: a parsed value keeps one, a client may read the other.
    let c = normal(&r, 200, &ct, br#"{"t": 1, "admin": false, "admin": true}"#);
    let d = normal(&r, 200, &ct, br#"{"t": 1, "admin": true}"#);
    assert!(difference(&c, &d).is_some());
    // Keys inside strings and escaped quotes are no keys.
    let e = normal(&r, 200, &ct, br#"{"t": 1, "s": "x\": y", "n": 12}"#);
    let f = normal(&r, 200, &ct, br#"{"t": 2, "s": "x\": y", "n": 12}"#);
    assert_eq!(difference(&e, &f), None, "masked /t");
}

#[test]
fn counting_every_header_names_the_noise() {
    let r = rules(RuleConfig { count_all_headers: true, ..RuleConfig::default() });
    let a = normal(&r, 200, &[("Date", "Wed, 02 Dec 2026 10:00:00 GMT"), ("Content-Length", "1")], b"x");
    let b = normal(&r, 200, &[("Date", "Wed, 02 Dec 2026 10:00:01 GMT"), ("Transfer-Encoding", "chunked")], b"x");
    // Date differs; the framing headers never count.
    assert_eq!(
        difference(&a, &b).map(|d| d.to_string()),
        Some("header date: \"Wed, 02 Dec 2026 10:00:00 GMT\" against \"Wed, 02 Dec 2026 10:00:01 GMT\"".into())
    );
}

#[test]
fn headers_can_be_added_and_removed() {
    let r = rules(RuleConfig {
        count_headers: vec!["X-Api-Version".into()],
        ignore_headers: vec!["cache-control".into()],
        ..RuleConfig::default()
    });
    assert!(r.counts("x-api-version") && r.counts("Content-Type"));
    assert!(!r.counts("Cache-Control") && !r.counts("date") && !r.counts("content-length"));
}

#[test]
fn json_masks_blank_noise_and_key_order_does_not_count() {
    let r = rules(RuleConfig { mask_json: vec!["/meta/timestamp".into(), "/id".into()], ..RuleConfig::default() });
    let ct = [("Content-Type", "application/json; charset=utf-8")];
    let a = normal(&r, 200, &ct, br#"{"id": 17, "items": [1, 2], "meta": {"timestamp": "10:00:00", "v": 1}}"#);
    let b = normal(&r, 200, &ct, br#"{"meta":{"v":1,"timestamp":"10:00:01"},"items":[1,2],"id":18}"#);
    assert_eq!(difference(&a, &b), None);
    assert_eq!(a.digest(), b.digest());
    // A difference outside the masks is found, and where.
    let c = normal(&r, 200, &ct, br#"{"id": 19, "items": [1, 3], "meta": {"timestamp": "x", "v": 1}}"#);
    assert_eq!(difference(&a, &c), Some(Difference::Json { pointer: "/items/1".into() }));
    // A body that is not JSON after all is voted as bytes.
    let broken = normal(&r, 200, &ct, b"{not json");
    assert!(matches!(difference(&a, &broken), Some(Difference::Body(..))));
    // Masks apply to JSON bodies only.
    let html = normal(&r, 200, &[("Content-Type", "text/html")], br#"{"id": 1}"#);
    let html2 = normal(&r, 200, &[("Content-Type", "text/html")], br#"{"id": 2}"#);
    assert!(difference(&html, &html2).is_some());
}

#[test]
fn text_masks_blank_their_matches() {
    let r = rules(RuleConfig { mask_text: vec![r"\d{2}:\d{2}:\d{2}".into()], ..RuleConfig::default() });
    let ct = [("Content-Type", "text/html")];
    let a = normal(&r, 200, &ct, b"<p>generated at 10:00:00</p>");
    let b = normal(&r, 200, &ct, b"<p>generated at 10:00:01</p>");
    assert_eq!(difference(&a, &b), None);
    let c = normal(&r, 200, &ct, b"<p>generated by 10:00:01</p>");
    assert!(difference(&a, &c).is_some());
    // Not for binary bodies.
    let png = [("Content-Type", "image/png")];
    assert!(difference(&normal(&r, 200, &png, b"10:00:00"), &normal(&r, 200, &png, b"10:00:01")).is_some());
}

#[test]
fn a_body_beyond_the_mask_limit_is_voted_whole() {
    let r = Rules::new(&RuleConfig { mask_json: vec!["/t".into()], max_masked_body: 16, ..RuleConfig::default() })
        .expect("valid");
    let ct = [("Content-Type", "application/json")];
    let small_a = normal(&r, 200, &ct, br#"{"t": 1}"#);
    let small_b = normal(&r, 200, &ct, br#"{"t": 2}"#);
    assert_eq!(difference(&small_a, &small_b), None);
    assert!(!small_a.mask_skipped);
    let big_a = normal(&r, 200, &ct, br#"{"t": 1, "pad": "0123456789"}"#);
    let big_b = normal(&r, 200, &ct, br#"{"t": 2, "pad": "0123456789"}"#);
    assert!(big_a.mask_skipped);
    assert_eq!(difference(&big_a, &big_b), Some(Difference::Body(29, 29)));
    // Voted whole means its bytes: the same body digests alike however it was cut.
    let mut one = r.response(200, ct.iter().map(|(n, v)| (*n, v.as_bytes())));
    one.body(br#"{"t": 1, "pad": "0123456789"}"#);
    assert_eq!(one.finish().digest(), big_a.digest());
}

#[test]
fn bad_rules_name_their_key() {
    let problems = Rules::new(&RuleConfig {
        count_headers: vec!["X Bad".into(), "Content-Length".into()],
        mask_json: vec!["meta/timestamp".into(), String::new()],
        mask_text: vec!["(".into(), "a*".into()],
        ..RuleConfig::default()
    })
    .expect_err("invalid");
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "http.count_headers[0]",
            "http.count_headers[1]",
            "http.mask_json[0]",
            "http.mask_json[1]",
            "http.mask_text[0]",
            "http.mask_text[1]"
        ]
    );
    assert!(problems[2].to_string().contains("starts with '/'"), "{}", problems[2]);
}

#[test]
fn json_difference_escapes_keys_and_finds_missing_ones() {
    let a: serde_json::Value = serde_json::json!({"a/b": {"x~y": 1}, "list": [1]});
    let b: serde_json::Value = serde_json::json!({"a/b": {"x~y": 2}, "list": [1]});
    assert_eq!(json_difference(&a, &b, String::new()), Some("/a~1b/x~0y".into()));
    let c: serde_json::Value = serde_json::json!({"a/b": {"x~y": 1}, "list": [1, 2]});
    assert_eq!(json_difference(&a, &c, String::new()), Some("/list/1".into()));
    let d: serde_json::Value = serde_json::json!({"a/b": {"x~y": 1}});
    assert_eq!(json_difference(&a, &d, String::new()), Some("/list".into()));
    assert_eq!(json_difference(&serde_json::json!(1), &serde_json::json!(2), String::new()), Some("/".into()));
}

proptest::proptest! {
    /// The digest does not depend on the order of different headers, the case of their names,
    /// where the body was cut, nor on headers that do not count; it does depend on the body.
    #[test]
    fn the_digest_ignores_what_does_not_count(
        order in proptest::sample::subsequence((0..6usize).collect::<Vec<_>>(), 6),
        shuffle in proptest::collection::vec(0usize..6, 6),
        upper in proptest::collection::vec(proptest::bool::ANY, 6),
        cuts in proptest::collection::vec(0usize..40, 0..4),
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        noise in "[a-z0-9 ]{0,12}",
        flip in 0usize..40,
    ) {
        let r = rules(RuleConfig::default());
        let headers = [
            ("Content-Type", "text/plain; charset=utf-8".to_string()),
            ("Set-Cookie", "a=1".to_string()),
            ("Content-Language", "en".to_string()),
            ("Location", "/x".to_string()),
            ("Server", noise.clone()),
            ("Date", noise.clone()),
        ];
        let mut permuted: Vec<usize> = order.clone();
        for (i, j) in shuffle.iter().enumerate() {
            let (i, j) = (i % permuted.len(), j % permuted.len());
            permuted.swap(i, j);
        }
        let named = |i: usize| {
            let (n, v) = &headers[i];
            let n = if upper[i] { n.to_ascii_uppercase() } else { n.to_ascii_lowercase() };
            (n, v.clone())
        };
        let build = |list: &[usize], body: &[u8], cuts: &[usize]| {
            let hs: Vec<(String, String)> = list.iter().map(|&i| named(i)).collect();
            let mut b = r.response(200, hs.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
            let mut at = 0;
            let mut points: Vec<usize> = cuts.iter().map(|c| c.min(&body.len()).to_owned()).collect();
            points.sort();
            for p in points {
                b.body(&body[at..p]);
                at = p;
            }
            b.body(&body[at..]);
            b.finish()
        };
        let plain = build(&order, &body, &[]);
        let mixed = build(&permuted, &body, &cuts);
        proptest::prop_assert_eq!(plain.digest(), mixed.digest());
        proptest::prop_assert_eq!(difference(&plain, &mixed), None);
        if !body.is_empty() {
            let mut changed = body.clone();
            let i = flip % changed.len();
            changed[i] ^= 1;
            proptest::prop_assert_ne!(plain.digest(), build(&order, &changed, &[]).digest());
        }
    }
}
