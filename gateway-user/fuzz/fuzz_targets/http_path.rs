//! The request path normaliser: never panics; normalising twice gives what normalising once
//! gave; and what it gives is in normal form (absolute, no empty, `.` or `..` segment, no
//! backslash, escapes only for bytes that are not unreserved, with upper-case hex digits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_model::http_path::normalize;

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(once) = normalize(raw) else {
        return;
    };
    assert_eq!(
        normalize(&once).as_deref(),
        Ok(once.as_str()),
        "not idempotent: {raw:?} -> {once:?}"
    );
    assert!(once.starts_with('/'), "{raw:?} -> {once:?}");
    assert!(!once.contains('\\'), "{raw:?} -> {once:?}");
    // Segments between slashes: none empty (but the last, after a trailing slash), none a dot
    // segment.
    let inner = once.strip_prefix('/').unwrap_or_default();
    let segments: Vec<&str> = inner.split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(!s.is_empty() || last, "empty segment: {raw:?} -> {once:?}");
        assert!(*s != "." && *s != "..", "dot segment: {raw:?} -> {once:?}");
    }
    let bytes = once.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = &bytes[i + 1..i + 3];
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "escape not upper-case hex: {raw:?} -> {once:?}"
            );
            let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                !unreserved(value) && value != b'/' && value != b'\\' && value != 0,
                "escape of {value:#x} left in: {raw:?} -> {once:?}"
            );
            i += 3;
        } else {
            i += 1;
        }
    }
});
