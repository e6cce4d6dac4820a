//! Name rules shared by every stage: Kubernetes object names and namespaces (RFC 1123, as the
//! API server checks them), Gateway API hostnames and section names, rule names, consumer ids.
//! Each returns what is wrong in words that follow the quoted value in a message
//! (`"Foo" may contain only lower-case letters, ...`).
use std::net::IpAddr;

/// Longest DNS label (RFC 1123).
pub const MAX_LABEL: usize = 63;
/// Longest DNS subdomain (RFC 1123).
pub const MAX_SUBDOMAIN: usize = 253;
/// Longest consumer id (sent in a header, keys rate limits).
pub const MAX_CONSUMER_LEN: usize = 128;

fn alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Lower-case letters, digits and `-`, starting and ending with a letter or digit, 1 to `max`
/// characters: the one label rule that namespaces, rule names and section names share.
fn label_like(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > max {
        return Err(format!("is longer than {max} characters"));
    }
    if !name.chars().all(|c| alnum(c) || c == '-') {
        return Err("may contain only lower-case letters, digits and '-'".into());
    }
    if !name.starts_with(alnum) || !name.ends_with(alnum) {
        return Err("must start and end with a lower-case letter or a digit".into());
    }
    Ok(())
}

/// A DNS label (RFC 1123), as namespaces are: at most 63 characters.
pub fn dns_label(name: &str) -> Result<(), String> {
    label_like(name, MAX_LABEL)
}

/// A DNS subdomain (RFC 1123), as the names of most Kubernetes objects (and Secrets,
/// ConfigMaps) are: labels of [`dns_label`]'s characters joined by `.`, at most 253 characters.
pub fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_SUBDOMAIN {
        return Err(format!("is longer than {MAX_SUBDOMAIN} characters"));
    }
    if !name.chars().all(|c| alnum(c) || c == '-' || c == '.') {
        return Err("may contain only lower-case letters, digits, '-' and '.'".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty part between dots".into());
        }
        if !label.starts_with(alnum) || !label.ends_with(alnum) {
            return Err(
                "must start and end with a lower-case letter or a digit (also around each '.')"
                    .into(),
            );
        }
    }
    Ok(())
}

/// A label value (Kubernetes "qualified name" rules): empty, or at most 63 characters of
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    qualified_name_part(value)
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of [`label_value`]'s
/// characters (not empty).
pub fn label_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            dns_subdomain(prefix).map_err(|why| format!("has a prefix that {why}"))?;
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("has an empty name".into());
    }
    qualified_name_part(name)
}

fn qualified_name_part(s: &str) -> Result<(), String> {
    if s.len() > MAX_LABEL {
        return Err(format!("is longer than {MAX_LABEL} characters"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric();
    if !s.chars().all(|c| ok(c) || matches!(c, '-' | '_' | '.')) {
        return Err("may contain only letters, digits, '-', '_' and '.'".into());
    }
    if !s.starts_with(ok) || !s.ends_with(ok) {
        return Err("must start and end with a letter or a digit".into());
    }
    Ok(())
}

/// A Gateway API `SectionName` (listener and rule names): [`dns_label`]'s characters, up to
/// 253 of them.
pub fn section_name(name: &str) -> Result<(), String> {
    label_like(name, MAX_SUBDOMAIN)
}

/// An L4 rule name: a DNS label of at most `max` characters (it names counters and metrics).
pub fn rule_name(name: &str, max: usize) -> Result<(), String> {
    label_like(name, max)
}

/// A Gateway API hostname: lower-case DNS labels (RFC 1123), optionally with a `*.` wildcard
/// label first when `wildcard_ok`, at most 253 characters; not an IP address, nor a name whose
/// last label is a number (resolvers would read `010.1.1.1` as the address 8.1.1.1).
pub fn hostname(name: &str, wildcard_ok: bool) -> Result<(), String> {
    let bare = match name.strip_prefix("*.") {
        Some(rest) if wildcard_ok => rest,
        Some(_) => return Err("may not be a wildcard here".into()),
        None => name,
    };
    if name.len() > MAX_SUBDOMAIN {
        return Err(format!("is longer than {MAX_SUBDOMAIN} characters"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err("is an IP address; a hostname is required".into());
    }
    if crate::net::ends_in_a_number(bare) {
        return Err(
            "ends in a number, so resolvers read it as an IPv4 address (010.1.1.1 as 8.1.1.1); \
             a hostname is required"
                .into(),
        );
    }
    if bare.is_empty() {
        return Err("is empty".into());
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err("has an empty label or one longer than 63 characters".into());
        }
        if !label.chars().all(|c| alnum(c) || c == '-') {
            return Err(
                "may contain only lower-case letters, digits, '-' and '.' (and a leading \"*.\")"
                    .into(),
            );
        }
        if !label.starts_with(alnum) || !label.ends_with(alnum) {
            return Err("has a label that does not start and end with a letter or digit".into());
        }
    }
    Ok(())
}

/// A consumer id: 1-[`MAX_CONSUMER_LEN`] letters, digits and `. _ - @` (it is sent to backends
/// in a header and keys rate limits).
pub fn consumer_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the consumer id is empty".into());
    }
    if id.len() > MAX_CONSUMER_LEN {
        return Err(format!(
            "the consumer id is longer than {MAX_CONSUMER_LEN} characters"
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(
            "the consumer id may only hold letters, digits and . _ - @ (it is sent in a header)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_subdomains_and_section_names_share_one_character_rule() {
        for ok in ["a", "a-b", "0", "web-1"] {
            assert!(dns_label(ok).is_ok(), "{ok}");
            assert!(dns_subdomain(ok).is_ok(), "{ok}");
            assert!(section_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a b", "é"] {
            assert!(dns_label(bad).is_err(), "{bad:?}");
            assert!(dns_subdomain(bad).is_err(), "{bad:?}");
            assert!(section_name(bad).is_err(), "{bad:?}");
        }
        assert!(dns_label(&"a".repeat(63)).is_ok());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(section_name(&"a".repeat(253)).is_ok());
        assert!(dns_subdomain("a.b-c.d").is_ok());
        assert!(dns_label("a.b").is_err());
        for bad in ["a..b", ".a", "a.", "a.-b", "a-.b"] {
            assert!(dns_subdomain(bad).is_err(), "{bad:?}");
        }
        assert!(dns_subdomain(&"a".repeat(254)).is_err());
    }

    #[test]
    fn hostnames_take_a_leading_wildcard_only_where_allowed() {
        assert!(hostname("api.example.com", false).is_ok());
        assert!(hostname("*.example.com", true).is_ok());
        assert!(hostname("*.example.com", false).is_err());
        assert!(hostname("10.0.0.1", false)
            .unwrap_err()
            .contains("IP address"));
        assert!(hostname("a..b", false).is_err());
        assert!(hostname("Api.example.com", false).is_err());
    }

    #[test]
    fn hostnames_that_resolvers_read_as_addresses_are_refused() {
        for numeric in [
            "010.1.1.1",
            "10.1",
            "2130706433",
            "0x7f.1",
            "a.b.0x1f",
            "*.example.123",
        ] {
            let e = hostname(numeric, true).unwrap_err();
            assert!(e.contains("ends in a number"), "{numeric}: {e}");
        }
        assert!(hostname("1.example.com", false).is_ok());
        assert!(hostname("web-1.example", false).is_ok());
    }

    #[test]
    fn consumer_ids_are_header_safe() {
        assert!(consumer_id("alice@example.com").is_ok());
        assert!(consumer_id("").is_err());
        assert!(consumer_id("a b").is_err());
        assert!(consumer_id("a\r\nx: y").is_err());
        assert!(consumer_id(&"a".repeat(MAX_CONSUMER_LEN + 1)).is_err());
    }
}
