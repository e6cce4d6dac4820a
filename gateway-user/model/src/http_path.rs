//! Request path normalisation, done once before routing (and, later, before authentication),
//! so that no spelling of a path reaches a route another spelling would not reach. The
//! normalised path is also what the backend receives: the router and the backend always agree
//! on what was asked for.
//!
//! What is done ([RFC 3986 section 6.2.2](https://www.rfc-editor.org/rfc/rfc3986#section-6.2.2)),
//! in this order:
//! 1. percent-encoded unreserved characters are decoded (`%2e` -> `.`, `%41` -> `A`), and the
//!    other escapes are kept with upper-case hex digits (`%c3%a9` -> `%C3%A9`); `%25` stays
//!    `%25`, so nothing is ever decoded twice;
//! 2. runs of `/` become one (`//a///b` -> `/a/b`);
//! 3. `.` segments are removed and `..` removes the segment before it (`/a/./b/../c` -> `/a/c`);
//!    a path ending in `/.` or `/..` keeps a trailing `/`, as RFC 3986's `remove_dot_segments`.
//!
//! What is refused (the proxy answers 400 Bad Request): a path that does not start with `/`;
//! a malformed escape (`%zz`, `%4`); an encoded slash or backslash (`%2F`, `%5C`), which a
//! backend could decode into a separator the router never saw; a raw backslash (some backends
//! treat it as `/`); an encoded NUL (`%00`); and a `..` that would climb above the root
//! (`/../etc/passwd`, `/a/../../b`): RFC 3986 would silently clamp it at the root, but no
//! honest client sends one.
use std::fmt;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: an encoded `/` or `\`.
    EncodedSlash,
    /// A raw `\`.
    Backslash,
    /// `%00`.
    EncodedNul,
    /// A `..` segment that would climb above the root.
    EscapesRoot,
}

impl PathError {
    /// A short reason, for logs and the 400 response.
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the path does not start with /",
            PathError::BadEscape => "malformed percent-encoding",
            PathError::EncodedSlash => "encoded slash or backslash (%2F, %5C)",
            PathError::Backslash => "backslash in the path",
            PathError::EncodedNul => "encoded NUL (%00)",
            PathError::EscapesRoot => "a .. segment climbs above the root",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalises the path of a request (the part before `?`). See the module documentation.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    if is_normal(raw) {
        // Most paths: one copy, not the three buffers of the general case (it runs on every
        // request).
        return Ok(raw.to_owned());
    }
    normalize_general(raw)
}

/// Whether [`normalize`] would return `raw` unchanged, told without building anything: it
/// starts with `/`, has no escape and no backslash, and no segment is empty (but the last),
/// `.` or `..`.
fn is_normal(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    if rest.bytes().any(|b| b == b'%' || b == b'\\') {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(s) = segments.next() {
        let last = segments.peek().is_none();
        if (s.is_empty() && !last) || s == "." || s == ".." {
            return false;
        }
    }
    true
}

/// [`normalize`] for any path: decodes, merges and resolves into new buffers.
fn normalize_general(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // 1. Escapes.
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let value = hi * 16 + lo;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    0 => return Err(PathError::EncodedNul),
                    v if is_unreserved(v) => decoded.push(char::from(v)),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        decoded.push('%');
                        decoded.push(char::from(HEX[usize::from(v >> 4)]));
                        decoded.push(char::from(HEX[usize::from(v & 15)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ => {
                // Copy the run up to the next escape or backslash at once (keeps UTF-8 whole).
                let end = bytes[i..]
                    .iter()
                    .position(|&c| c == b'%' || c == b'\\')
                    .map_or(bytes.len(), |n| i + n);
                decoded.push_str(&raw[i..end]);
                i = end;
            }
        }
    }
    // 2 and 3. Segments.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = decoded.ends_with('/');
    for segment in decoded.split('/') {
        match segment {
            "" => {}
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
                trailing_slash = true;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    // The loop above sees the last segment last: a path ending in "/" ends with an empty one,
    // which leaves `trailing_slash` as it was set before the loop.
    if decoded.ends_with('/') {
        trailing_slash = true;
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalize(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    #[test]
    fn plain_paths_are_unchanged() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/a/b/",
            "/api/v1/orders",
            "/a%20b",
            "/%C3%A9",
        ] {
            assert_eq!(ok(p), p);
        }
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(ok("/a/../admin"), "/admin");
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/."), "/a/b/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/./"), "/");
        assert_eq!(ok("/a/b/../../c"), "/c");
        assert_eq!(
            ok("/a/...b"),
            "/a/...b",
            "only exact . and .. segments are special"
        );
    }

    #[test]
    fn encoded_dots_are_dot_segments_too() {
        assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/public/%2E%2E/admin"), "/admin");
        assert_eq!(ok("/public/.%2e/admin"), "/admin");
        assert_eq!(ok("/%2e/admin"), "/admin");
    }

    #[test]
    fn duplicate_slashes_are_merged() {
        assert_eq!(ok("//admin"), "/admin");
        assert_eq!(ok("/a//b///c//"), "/a/b/c/");
        assert_eq!(ok("//"), "/");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(ok("/%61dmin"), "/admin");
        assert_eq!(ok("/%7euser"), "/~user");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/100%25"), "/100%25", "an encoded % is never decoded");
        assert_eq!(ok("/%252e%252e/x"), "/%252e%252e/x", "no double decoding");
    }

    #[test]
    fn tricks_are_refused() {
        for (raw, want) in [
            ("admin", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%5cb", PathError::EncodedSlash),
            ("/a\\..\\admin", PathError::Backslash),
            ("/a%00", PathError::EncodedNul),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
            ("/..", PathError::EscapesRoot),
            ("/../etc/passwd", PathError::EscapesRoot),
            ("/a/../../b", PathError::EscapesRoot),
            ("/%2e%2e/x", PathError::EscapesRoot),
        ] {
            assert_eq!(normalize(raw), Err(want), "{raw:?}");
        }
    }

    proptest::proptest! {
        /// The shortcut for paths already normal says so only when the general case agrees.
        #[test]
        fn the_shortcut_agrees_with_the_general_case(raw in "(/|%2[eEfF]|[a.%2Ee/\\\\]){0,12}") {
            proptest::prop_assert_eq!(normalize(&raw), normalize_general(&raw));
            if is_normal(&raw) {
                proptest::prop_assert_eq!(normalize_general(&raw), Ok(raw.clone()));
            }
        }
    }

    #[test]
    fn the_shortcut_takes_only_paths_already_normal() {
        for p in ["/", "/a", "/a/b/", "/api/v1/orders", "/a/...b", "/.a/b."] {
            assert!(is_normal(p), "{p:?}");
        }
        for p in [
            "", "a", "//", "/a//b", "/./", "/a/.", "/a/..", "/%61", "/a\\b", "*",
        ] {
            assert!(!is_normal(p), "{p:?}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["/a/../b/./c//d/", "/%2e/x", "/caf%c3%a9/%7e", "/a/b/.."] {
            let once = ok(p);
            assert_eq!(ok(&once), once, "{p:?}");
        }
    }
}
