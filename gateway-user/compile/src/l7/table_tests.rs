//! Unit tests of `l7/table.rs` and its parts.
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

#[test]
fn wildcards_match_one_or_more_labels_and_not_the_bare_domain() {
    let w = HostPattern::parse("*.example.com");
    assert!(w.matches("a.example.com"));
    assert!(w.matches("a.b.example.com"));
    assert!(!w.matches("example.com"));
    assert!(!w.matches("aexample.com"));
}

#[test]
fn host_patterns_intersect_as_the_gateway_api_says() {
    let p = HostPattern::parse;
    assert_eq!(
        p("*.example.com").intersect(&p("a.example.com")),
        Some(p("a.example.com"))
    );
    assert_eq!(
        p("a.example.com").intersect(&p("*.example.com")),
        Some(p("a.example.com"))
    );
    assert_eq!(
        p("*.example.com").intersect(&p("*.a.example.com")),
        Some(p("*.a.example.com"))
    );
    assert_eq!(p("*.example.com").intersect(&p("a.other.com")), None);
    assert_eq!(p("a.com").intersect(&p("b.com")), None);
    assert_eq!(HostPattern::Any.intersect(&p("x.com")), Some(p("x.com")));
}

#[test]
fn host_index_lists_matches_most_specific_first() {
    let mut idx: HostIndex<&str> = HostIndex::default();
    idx.entry(&HostPattern::Any, || "any");
    idx.entry(&HostPattern::parse("*.com"), || "*.com");
    idx.entry(&HostPattern::parse("*.example.com"), || "*.example.com");
    idx.entry(&HostPattern::parse("a.example.com"), || "a.example.com");
    let got: Vec<_> = idx.matching("a.example.com").copied().collect();
    assert_eq!(got, ["a.example.com", "*.example.com", "*.com", "any"]);
    let got: Vec<_> = idx.matching("b.x.example.com").copied().collect();
    assert_eq!(got, ["*.example.com", "*.com", "any"]);
    let got: Vec<_> = idx.matching("localhost").copied().collect();
    assert_eq!(got, ["any"]);
}

#[test]
fn path_prefix_matches_whole_segments() {
    assert!(prefix_matches("/api", "/api"));
    assert!(prefix_matches("/api", "/api/"));
    assert!(prefix_matches("/api", "/api/v1"));
    assert!(!prefix_matches("/api", "/apiv1"));
    assert!(!prefix_matches("/api", "/"));
    assert!(prefix_matches("/", "/anything"));
}

#[test]
fn replace_prefix_match_follows_the_gateway_api_examples() {
    let m = |repl: &str, prefix: &str, path: &str| {
        PathModifier::Prefix(repl.into()).apply(path, Some(prefix))
    };
    assert_eq!(m("/xyz", "/foo", "/foo"), "/xyz");
    assert_eq!(m("/xyz", "/foo", "/foo/"), "/xyz/");
    assert_eq!(m("/xyz", "/foo", "/foo/bar"), "/xyz/bar");
    assert_eq!(m("/xyz/", "/foo", "/foo/bar"), "/xyz/bar");
    assert_eq!(m("/", "/foo", "/foo/bar"), "/bar");
    assert_eq!(m("/", "/foo", "/foo"), "/");
    assert_eq!(m("/", "/foo", "/foo/"), "/");
    assert_eq!(m("/xyz", "/", "/bar"), "/xyz/bar");
    assert_eq!(m("/xyz", "/", "/"), "/xyz");
}

#[test]
fn query_parameters_are_percent_decoded_and_the_first_counts() {
    let q = Some("a=1&b=x%20y&a=2&flag&c%3D=z");
    assert_eq!(query_param(q, "a").as_deref(), Some("1"));
    assert_eq!(query_param(q, "b").as_deref(), Some("x y"));
    assert_eq!(query_param(q, "flag").as_deref(), Some(""));
    assert_eq!(query_param(q, "c=").as_deref(), Some("z"));
    assert_eq!(query_param(q, "d"), None);
    assert_eq!(query_param(None, "a"), None);
}

#[test]
fn header_modifier_sets_appends_and_removes() {
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("old"));
    h.insert("x-b", HeaderValue::from_static("one"));
    h.insert("x-c", HeaderValue::from_static("gone"));
    let m = HeaderModifier {
        set: vec![(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("new"),
        )],
        add: vec![
            (
                HeaderName::from_static("x-b"),
                HeaderValue::from_static("two"),
            ),
            (
                HeaderName::from_static("x-d"),
                HeaderValue::from_static("d"),
            ),
        ],
        remove: vec![HeaderName::from_static("x-c")],
    };
    m.apply(&mut h);
    assert_eq!(h["x-a"], "new");
    assert_eq!(h["x-b"], "one,two");
    assert_eq!(h["x-d"], "d");
    assert!(!h.contains_key("x-c"));
}

#[test]
fn header_modifier_add_keeps_every_value_already_there() {
    let add = |name: &'static str, value: &'static str| HeaderModifier {
        add: vec![(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )],
        ..HeaderModifier::default()
    };
    let mut h = HeaderMap::new();
    h.append("x-a", HeaderValue::from_static("1"));
    h.append("x-a", HeaderValue::from_static("2"));
    add("x-a", "3").apply(&mut h);
    let got: Vec<_> = h.get_all("x-a").iter().collect();
    assert_eq!(got, ["1,2,3"]);
    // A response's cookies are never joined: the new one is a field of its own.
    let mut h = HeaderMap::new();
    h.append("set-cookie", HeaderValue::from_static("a=1; Path=/"));
    h.append("set-cookie", HeaderValue::from_static("b=2"));
    add("set-cookie", "c=3").apply(&mut h);
    let got: Vec<_> = h.get_all("set-cookie").iter().collect();
    assert_eq!(got, ["a=1; Path=/", "b=2", "c=3"]);
}

#[test]
fn weighted_pick_covers_each_backend_in_proportion() {
    let rule = Rule {
        route: "default/r".into(),
        index: 0,
        request_headers: None,
        response_headers: None,
        rewrite: None,
        redirect: None,
        cors: None,
        mirrors: Vec::new(),
        backends: vec![
            WeightedBackend {
                backend: 7,
                weight: 1,
                filters: None,
            },
            WeightedBackend {
                backend: 8,
                weight: 0,
                filters: None,
            },
            WeightedBackend {
                backend: 9,
                weight: 3,
                filters: None,
            },
        ],
        timeouts: Timeouts {
            request: None,
            backend_request: None,
        },
        retry: Retry {
            codes: vec![],
            attempts: 0,
            backoff: Duration::ZERO,
            after_send: false,
        },
        rate_limits: RouteLimits::default(),
        auth: None,
        max_request_body: None,
        unresolved_weight: 0,
        failure: None,
        grpc: false,
    };
    assert_eq!(rule.total_weight(), 4);
    let picks: Vec<_> = (0..4).map(|r| rule.pick_backend(r)).collect();
    assert_eq!(picks, [Some(7), Some(9), Some(9), Some(9)]);
    assert_eq!(rule.pick_backend(4), None);
}

#[test]
fn the_share_of_unresolved_backend_refs_picks_no_backend() {
    let rule = Rule {
        backends: vec![WeightedBackend {
            backend: 7,
            weight: 1,
            filters: None,
        }],
        unresolved_weight: 3,
        ..Rule {
            route: "default/r".into(),
            index: 0,
            request_headers: None,
            response_headers: None,
            rewrite: None,
            redirect: None,
            cors: None,
            mirrors: Vec::new(),
            backends: vec![],
            timeouts: Timeouts {
                request: None,
                backend_request: None,
            },
            retry: Retry {
                codes: vec![],
                attempts: 0,
                backoff: Duration::ZERO,
                after_send: false,
            },
            rate_limits: RouteLimits::default(),
            auth: None,
            max_request_body: None,
            unresolved_weight: 0,
            failure: None,
            grpc: false,
        }
    };
    assert_eq!(rule.total_weight(), 4);
    let picks: Vec<_> = (0..4).map(|r| rule.pick_backend(r)).collect();
    assert_eq!(picks, [Some(7), None, None, None]);
}
