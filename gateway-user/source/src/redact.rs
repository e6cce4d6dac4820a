//! Source URLs as they may be shown. A URL can carry a credential: a password in its userinfo
//! (`https://user:pass@host/repo`), a token in its query (`?private_token=...`) or, more rarely,
//! in its fragment. Every message, status field, metric label and log line that names a source
//! shows [`redacted`] instead of the URL, and text that came from a library which was handed the
//! URL (libgit2's error messages) goes through [`scrub`].
//!
//! The URL itself is not changed: only its display. The password of a URL is refused anyway
//! (credentials come from `--git-password-file` / `--git-password-env`), but the refusal must not
//! print it either.
use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// What a hidden part of a URL is shown as.
pub const MASK: &str = "***";

/// `url` with the password of its userinfo, its whole query and its fragment replaced by
/// [`MASK`]; the rest (scheme, user name, host, port, path) as written, so that an operator
/// still recognises the source. Works on text that is not a valid URL too (a URL refused as
/// malformed is shown through here as well), and leaves a directory path or an scp-like
/// `user@host:path` (which has no password) as it is.
///
/// The whole query goes, not only its values: a token can sit in a key (`?glpat-...`) as
/// well.
pub fn redacted(url: &str) -> String {
    let Parts {
        head,
        password,
        query,
        fragment,
    } = Parts::of(url);
    let mut out = String::with_capacity(url.len());
    match password {
        Some((start, end)) => {
            out.push_str(&head[..start]);
            out.push_str(MASK);
            out.push_str(&head[end..]);
        }
        None => out.push_str(head),
    }
    if let Some(query) = query {
        out.push('?');
        if !query.is_empty() {
            out.push_str(MASK);
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        if !fragment.is_empty() {
            out.push_str(MASK);
        }
    }
    out
}

/// `text` (an error message of a library that was given `url`) with `url` shown as
/// [`redacted`], and every secret part of `url` (password, query, fragment, as written and
/// percent-decoded) replaced by [`MASK`] wherever else it appears: libgit2 may quote the URL,
/// or a path or host it derived from it, in its messages.
pub fn scrub<'a>(text: &'a str, url: &str) -> Cow<'a, str> {
    let secrets = secrets(url);
    if secrets.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = text.replace(url, &redacted(url));
    for secret in &secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// The parts of `url` that [`redacted`] hides, as written and decoded, longest first (so that
/// a secret that contains another is replaced whole).
fn secrets(url: &str) -> Vec<String> {
    let Parts {
        head,
        password,
        query,
        fragment,
    } = Parts::of(url);
    let mut secrets: Vec<String> = Vec::new();
    let written = password
        .map(|(start, end)| &head[start..end])
        .into_iter()
        .chain(query)
        .chain(fragment)
        .filter(|s| !s.is_empty());
    for part in written {
        secrets.push(part.to_owned());
        let decoded = percent_decode_str(part).decode_utf8_lossy();
        if decoded != part {
            secrets.push(decoded.into_owned());
        }
        // Each value of a query on its own too: a library may quote one parameter.
        if query == Some(part) {
            for pair in part.split('&') {
                let value = pair.split_once('=').map_or(pair, |(_, v)| v);
                if !value.is_empty() {
                    secrets.push(value.to_owned());
                    secrets.push(percent_decode_str(value).decode_utf8_lossy().into_owned());
                }
            }
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

/// A URL cut where its secrets are.
struct Parts<'a> {
    /// Everything before the query and fragment.
    head: &'a str,
    /// Where the password is in `head` (byte range), when there is one.
    password: Option<(usize, usize)>,
    /// The query, without its `?`.
    query: Option<&'a str>,
    /// The fragment, without its `#`.
    fragment: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn of(url: &'a str) -> Self {
        let (rest, fragment) = match url.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (url, None),
        };
        let (head, query) = match rest.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (rest, None),
        };
        Parts {
            head,
            password: password_range(head),
            query,
            fragment,
        }
    }
}

/// The byte range of the password in `head` (`scheme://user:password@host...`), if it has one.
///
/// The userinfo ends at the last `@` of the authority (RFC 3986 section 3.2.1; WHATWG's parser
/// does the same with an `@` in a password). A password with an unencoded `/` makes a parser
/// end the authority early (and refuse the URL, or take part of the password for a port); so
/// when the authority has a `:` but no `@`, an `@` further on still ends a userinfo here:
/// showing too little of an odd URL is better than showing a password.
fn password_range(head: &str) -> Option<(usize, usize)> {
    let start = head.find("://")? + 3;
    let after = &head[start..];
    let authority_len = after.find('/').unwrap_or(after.len());
    let authority = &after[..authority_len];
    let userinfo_len = match authority.rfind('@') {
        Some(at) => at,
        None if authority.contains(':') => after.rfind('@')?,
        None => return None,
    };
    let colon = after[..userinfo_len].find(':')?;
    let (from, to) = (start + colon + 1, start + userinfo_len);
    (from < to).then_some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_queries_and_fragments_are_hidden_and_the_rest_is_kept() {
        for (url, shown) in [
            (
                "https://bot:hunter2@git.example.com/org/policy.git",
                "https://bot:***@git.example.com/org/policy.git",
            ),
            (
                "https://git.example.com/org/policy.git?private_token=SECRET&ref=main",
                "https://git.example.com/org/policy.git?***",
            ),
            (
                "https://bot:p%40ss@git.example.com:8443/p.git?t=SECRET#frag",
                "https://bot:***@git.example.com:8443/p.git?***#***",
            ),
            // An '@' inside the password: the userinfo ends at the last one.
            (
                "https://bot:p@ss@git.example.com/p.git",
                "https://bot:***@git.example.com/p.git",
            ),
            // An unencoded '/' in the password.
            (
                "https://bot:pa/ss@git.example.com/p.git",
                "https://bot:***@git.example.com/p.git",
            ),
            (
                "ssh://git:pw@git.example.com:2222/p.git",
                "ssh://git:***@git.example.com:2222/p.git",
            ),
            // Nothing to hide.
            (
                "https://alice@git.example.com/p.git",
                "https://alice@git.example.com/p.git",
            ),
            (
                "https://git.example.com:8443/p.git",
                "https://git.example.com:8443/p.git",
            ),
            (
                "https://git.example.com/org/p@v2.git",
                "https://git.example.com/org/p@v2.git",
            ),
            (
                "git@git.example.com:org/policy.git",
                "git@git.example.com:org/policy.git",
            ),
            ("file:///srv/policy", "file:///srv/policy"),
            ("/etc/tollgate/policies", "/etc/tollgate/policies"),
            (
                "https://bot:@git.example.com/p.git?",
                "https://bot:@git.example.com/p.git?",
            ),
            // Not a valid URL (a space): hidden all the same.
            (
                "https://bot:hunter 2@git example.com/p?token=SECRET",
                "https://bot:***@git example.com/p?***",
            ),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }

    #[test]
    fn a_library_message_loses_every_secret_of_the_url() {
        let url = "file:///srv/policy?token=S%45CRET&x=hunter2";
        let message = format!(
            "could not find repository at '/srv/policy?token=SECRET&x=hunter2'; {url}; hunter2"
        );
        let scrubbed = scrub(&message, url);
        for secret in ["SECRET", "S%45CRET", "hunter2"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.contains("file:///srv/policy?***"), "{scrubbed}");
        assert!(scrubbed.contains("could not find repository"), "{scrubbed}");
        // A URL without secrets leaves the text alone.
        assert!(matches!(
            scrub("failed to connect", "https://git.example.com/p.git"),
            Cow::Borrowed(_)
        ));
    }
}
