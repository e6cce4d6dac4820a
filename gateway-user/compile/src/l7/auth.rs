//! `AuthPolicy` objects: API keys, basic auth, JWT providers (JWKS by URL or inline, claims to
//! headers, where the token is read), client certificates and `allowedConsumers`.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tollgate_model::auth::{AuthPolicy, CertificateField, CredentialRef};
use tollgate_model::Checker;

use super::limits::*;
use super::ratelimit::ban_on_abuse;
use super::table::{
    ApiKeyDef, AuthDef, BanDef, JwksDef, JwtProviderDef, KeyLocation, SecretRef, TokenLocation,
};
use super::targets::check_target_refs;
use super::{parse_duration, PROXY_REQUEST_HEADERS};

/// Checks an AuthPolicy; returns the names of the routes it targets and the policy.
pub(super) fn auth_policy(
    c: &mut Checker<'_, '_>,
    ns: &str,
    name: &str,
    p: &AuthPolicy,
    routes: &HashSet<(&str, &str)>,
) -> Option<(Vec<String>, AuthDef, Option<BanDef>)> {
    let before = c.mark();
    let spec = &p.spec;
    let targets = check_target_refs(
        c,
        ns,
        "an AuthPolicy",
        "protects",
        &spec.target_refs,
        routes,
    );
    let ban = spec.ban_on_abuse.as_ref().and_then(|b| {
        ban_on_abuse(
            c,
            "failures",
            b.failures,
            &b.within,
            &b.block_for,
            b.client_ip.as_ref(),
        )
    });
    if spec.api_key.is_none()
        && spec.basic_auth.is_none()
        && spec.jwt.is_none()
        && spec.client_certificate.is_none()
    {
        c.error(
            "spec",
            "no method: set apiKey, basicAuth, jwt or clientCertificate (with several, any one is enough)",
        );
    }
    let refs = |c: &mut Checker<'_, '_>, at: &str, list: &[CredentialRef]| -> Vec<SecretRef> {
        if list.is_empty() {
            c.error(at, "empty: name at least one credential Secret");
        }
        c.count(at, list.len(), MAX_CREDENTIAL_REFS);
        let mut out: Vec<SecretRef> = Vec::new();
        for (i, r) in list.iter().enumerate() {
            if let Err(why) = tollgate_model::names::dns_label(&r.name) {
                c.error(format!("{at}[{i}].name"), format!("\"{}\" {why}", r.name));
                continue;
            }
            let s = SecretRef {
                namespace: ns.to_owned(),
                name: r.name.clone(),
            };
            if out.contains(&s) {
                c.error(
                    format!("{at}[{i}].name"),
                    format!("Secret {s} is named twice"),
                );
            } else {
                out.push(s);
            }
        }
        out
    };
    let api_key = spec.api_key.as_ref().and_then(|k| {
        let files = refs(c, "spec.apiKey.credentialRefs", &k.credential_refs);
        let location = match (&k.header, &k.query) {
            (Some(h), None) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) if PROXY_REQUEST_HEADERS.contains(&n.as_str()) || n == http::header::AUTHORIZATION => {
                    c.error(
                        "spec.apiKey.header",
                        format!("\"{h}\" is a header the proxy or basic auth owns; pick another (like X-Api-Key)"),
                    );
                    None
                }
                Ok(n) => Some(KeyLocation::Header(n)),
                Err(_) => {
                    c.error(
                        "spec.apiKey.header",
                        format!("\"{h}\" is not a valid HTTP header name"),
                    );
                    None
                }
            },
            (None, Some(q))
                if !q.is_empty()
                    && q.len() <= 64
                    && q.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
            {
                Some(KeyLocation::Query(q.clone()))
            }
            (None, Some(q)) => {
                c.error(
                    "spec.apiKey.query",
                    format!("\"{q}\" is not a query parameter name (1-64 letters, digits, . _ -)"),
                );
                None
            }
            _ => {
                c.error("spec.apiKey", "set exactly one of header or query");
                None
            }
        };
        location.map(|location| ApiKeyDef { location, files })
    });
    let basic = spec
        .basic_auth
        .as_ref()
        .map(|b| refs(c, "spec.basicAuth.credentialRefs", &b.credential_refs))
        .unwrap_or_default();
    let jwt = spec
        .jwt
        .as_ref()
        .map(|j| jwt_providers(c, ns, j))
        .unwrap_or_default();
    // Claim headers are removed from requests before credentials are read: none may be a
    // header that carries credentials.
    if let Some(j) = &spec.jwt {
        let lower = |h: &str| h.to_ascii_lowercase();
        let mut carriers: Vec<String> = Vec::new();
        if let Some(h) = spec.api_key.as_ref().and_then(|k| k.header.as_deref()) {
            carriers.push(lower(h));
        }
        for p in &j.providers {
            if let Some(h) = p.extract_from.as_ref().and_then(|l| l.header.as_deref()) {
                carriers.push(lower(h));
            }
        }
        for (i, p) in j.providers.iter().enumerate() {
            for (k, ch) in p.claim_to_headers.iter().enumerate() {
                if carriers.contains(&lower(&ch.header)) {
                    c.error(
                        format!("spec.jwt.providers[{i}].claimToHeaders[{k}].header"),
                        format!(
                            "\"{}\" carries credentials (apiKey or extractFrom); a claim header is removed from requests first",
                            ch.header
                        ),
                    );
                }
            }
        }
    }
    let client_certificate = spec
        .client_certificate
        .as_ref()
        .map(|cc| cc.consumer_from.unwrap_or(CertificateField::CommonName));
    let allowed_consumers = spec.allowed_consumers.as_ref().map(|list| {
        let at = "spec.allowedConsumers";
        if list.is_empty() {
            c.error(
                at,
                "empty: list the consumers allowed, or remove allowedConsumers to allow any",
            );
        }
        c.count(at, list.len(), MAX_ALLOWED_CONSUMERS);
        let mut out: Vec<Arc<str>> = Vec::new();
        for (i, id) in list.iter().enumerate() {
            if let Err(why) = tollgate_model::names::consumer_id(id) {
                c.error(format!("{at}[{i}]"), format!("\"{id}\": {why}"));
            } else if out.iter().any(|o| **o == **id) {
                c.error(format!("{at}[{i}]"), format!("\"{id}\" is listed twice"));
            } else {
                out.push(id.as_str().into());
            }
        }
        out
    });
    c.clean_since(before).then(|| {
        (
            targets,
            AuthDef {
                policy: format!("{ns}/{name}").into(),
                api_key,
                basic,
                jwt,
                client_certificate,
                allowed_consumers,
            },
            ban,
        )
    })
}

/// A duration of a policy field (`0s` allowed when `zero`), or why not: the Gateway API's
/// format, as every policy duration.
fn policy_duration(text: &str, zero: bool) -> Result<Duration, String> {
    if zero {
        parse_duration(text)
    } else {
        tollgate_model::units::parse_nonzero_duration(text)
    }
}

/// Checks the `jwt` of an AuthPolicy.
fn jwt_providers(
    c: &mut Checker<'_, '_>,
    ns: &str,
    j: &tollgate_model::auth::JwtAuth,
) -> Vec<JwtProviderDef> {
    if j.providers.is_empty() {
        c.error("spec.jwt.providers", "empty: name at least one provider");
    }
    c.count("spec.jwt.providers", j.providers.len(), MAX_JWT_PROVIDERS);
    let mut out: Vec<JwtProviderDef> = Vec::new();
    for (i, p) in j.providers.iter().enumerate() {
        let at = format!("spec.jwt.providers[{i}]");
        let before = c.mark();
        if let Err(why) = tollgate_model::names::dns_label(&p.name) {
            c.error(format!("{at}.name"), format!("\"{}\" {why}", p.name));
        } else if j.providers[..i].iter().any(|o| o.name == p.name) {
            c.error(
                format!("{at}.name"),
                format!("provider \"{}\" is named twice", p.name),
            );
        }
        if p.issuer.as_deref().is_some_and(str::is_empty) {
            c.error(
                format!("{at}.issuer"),
                "empty: name the issuer, or remove issuer to accept any",
            );
        }
        c.count(&format!("{at}.audiences"), p.audiences.len(), 16);
        if p.audiences.iter().any(String::is_empty) {
            c.error(format!("{at}.audiences"), "an audience is empty");
        }
        let jwks = match (&p.jwks.uri, &p.jwks.inline) {
            (Some(uri), None) => {
                let refresh = match &p.jwks.refresh_interval {
                    None => Some(DEFAULT_JWKS_REFRESH),
                    Some(t) => match policy_duration(t, false) {
                        Ok(d)
                            if (Duration::from_secs(30)..=Duration::from_secs(86_400))
                                .contains(&d) =>
                        {
                            Some(d)
                        }
                        Ok(_) => {
                            c.error(
                                format!("{at}.jwks.refreshInterval"),
                                format!("\"{t}\" is out of range (30s-24h)"),
                            );
                            None
                        }
                        Err(why) => {
                            c.error(format!("{at}.jwks.refreshInterval"), why);
                            None
                        }
                    },
                };
                let ca = p.jwks.ca_certificate_ref.as_ref().and_then(|r| {
                    match tollgate_model::names::dns_label(&r.name) {
                        Ok(()) => Some(SecretRef {
                            namespace: ns.to_owned(),
                            name: r.name.clone(),
                        }),
                        Err(why) => {
                            c.error(
                                format!("{at}.jwks.caCertificateRef.name"),
                                format!("\"{}\" {why}", r.name),
                            );
                            None
                        }
                    }
                });
                match url::Url::parse(uri) {
                    Ok(u)
                        if matches!(u.scheme(), "http" | "https")
                            && u.host_str().is_some_and(|h| !h.is_empty())
                            && u.username().is_empty()
                            && u.password().is_none()
                            && u.fragment().is_none()
                            && uri.len() <= 2048 =>
                    {
                        if p.jwks.ca_certificate_ref.is_some() && u.scheme() != "https" {
                            c.error(
                                format!("{at}.jwks.caCertificateRef"),
                                "a CA only applies to an https uri",
                            );
                        }
                        refresh.map(|refresh| JwksDef::Uri {
                            url: u.to_string(),
                            ca,
                            refresh,
                        })
                    }
                    _ => {
                        c.error(
                            format!("{at}.jwks.uri"),
                            format!("\"{uri}\" is not an http:// or https:// URL with a host (no user info, no fragment, at most 2048 characters)"),
                        );
                        None
                    }
                }
            }
            (None, Some(inline)) => {
                if p.jwks.refresh_interval.is_some() || p.jwks.ca_certificate_ref.is_some() {
                    c.error(
                        format!("{at}.jwks"),
                        "refreshInterval and caCertificateRef only apply to a uri",
                    );
                }
                match crate::l7::jwks::parse_jwks(inline.as_bytes()) {
                    Ok(_) => Some(JwksDef::Inline(inline.as_str().into())),
                    Err(why) => {
                        c.error(format!("{at}.jwks.inline"), why);
                        None
                    }
                }
            }
            _ => {
                c.error(format!("{at}.jwks"), "set exactly one of uri or inline");
                None
            }
        };
        let consumer_claim = p.consumer_claim.clone().unwrap_or_else(|| "sub".into());
        if consumer_claim.is_empty() || consumer_claim.len() > 256 {
            c.error(
                format!("{at}.consumerClaim"),
                "a claim name is 1-256 characters",
            );
        }
        c.count(
            &format!("{at}.claimToHeaders"),
            p.claim_to_headers.len(),
            16,
        );
        let mut claim_headers: Vec<(String, HeaderName)> = Vec::new();
        for (k, ch) in p.claim_to_headers.iter().enumerate() {
            let hat = format!("{at}.claimToHeaders[{k}]");
            if ch.claim.is_empty() || ch.claim.len() > 256 {
                c.error(format!("{hat}.claim"), "a claim name is 1-256 characters");
            }
            match HeaderName::from_bytes(ch.header.as_bytes()) {
                Ok(n)
                    if PROXY_REQUEST_HEADERS.contains(&n.as_str())
                        || n == http::header::AUTHORIZATION
                        || n == http::header::COOKIE =>
                {
                    c.error(
                        format!("{hat}.header"),
                        format!("\"{}\" is a header the proxy owns or credentials travel in; pick another (like X-Jwt-Sub)", ch.header),
                    );
                }
                Ok(n) if claim_headers.iter().any(|(_, h)| *h == n) => {
                    c.error(
                        format!("{hat}.header"),
                        format!("header \"{}\" is named twice", ch.header),
                    );
                }
                Ok(n) => claim_headers.push((ch.claim.clone(), n)),
                Err(_) => c.error(
                    format!("{hat}.header"),
                    format!("\"{}\" is not a valid HTTP header name", ch.header),
                ),
            }
        }
        let location = match &p.extract_from {
            None => Some(TokenLocation::Bearer),
            Some(l) => {
                match (&l.header, &l.query) {
                    (Some(h), None) => match HeaderName::from_bytes(h.as_bytes()) {
                        Ok(n) if PROXY_REQUEST_HEADERS.contains(&n.as_str()) => {
                            c.error(
                                format!("{at}.extractFrom.header"),
                                format!("\"{h}\" is a header the proxy owns"),
                            );
                            None
                        }
                        Ok(n) if n == http::header::AUTHORIZATION => Some(TokenLocation::Bearer),
                        Ok(n) => Some(TokenLocation::Header(n)),
                        Err(_) => {
                            c.error(
                                format!("{at}.extractFrom.header"),
                                format!("\"{h}\" is not a valid HTTP header name"),
                            );
                            None
                        }
                    },
                    (None, Some(q))
                        if !q.is_empty()
                            && q.len() <= 64
                            && q.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
                    {
                        Some(TokenLocation::Query(q.clone()))
                    }
                    (None, Some(q)) => {
                        c.error(
                        format!("{at}.extractFrom.query"),
                        format!("\"{q}\" is not a query parameter name (1-64 letters, digits, . _ -)"),
                    );
                        None
                    }
                    _ => {
                        c.error(
                            format!("{at}.extractFrom"),
                            "set exactly one of header or query",
                        );
                        None
                    }
                }
            }
        };
        let clock_skew = match &p.clock_skew {
            None => Some(DEFAULT_CLOCK_SKEW),
            Some(t) => match policy_duration(t, true) {
                Ok(d) if d <= MAX_CLOCK_SKEW => Some(d),
                Ok(_) => {
                    c.error(
                        format!("{at}.clockSkew"),
                        format!("\"{t}\" is more than the 5m allowed"),
                    );
                    None
                }
                Err(why) => {
                    c.error(format!("{at}.clockSkew"), why);
                    None
                }
            },
        };
        if !c.clean_since(before) {
            continue;
        }
        if let (Some(jwks), Some(location), Some(clock_skew)) = (jwks, location, clock_skew) {
            out.push(JwtProviderDef {
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                audiences: p.audiences.clone(),
                jwks,
                consumer_claim,
                claim_headers,
                location,
                clock_skew,
            });
        }
    }
    out
}
