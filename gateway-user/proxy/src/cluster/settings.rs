//! `--ratelimit-redis` and its companions: where the shared counters are and how to log in,
//! checked at start (a bad value stops the agent with the flag named).
//!
//! Three topologies, told apart by the scheme:
//! - `redis://HOST[:PORT][/DB]` (`rediss://` for TLS): one standalone or replicated primary;
//! - `redis+cluster://HOST[:PORT][,HOST[:PORT]...]` (`rediss+cluster://`): seed nodes of a Redis
//!   Cluster (the client learns the rest, and follows slot moves and failovers);
//! - `redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/PRIMARY[/DB]` (`rediss+sentinel://`):
//!   Sentinels (port 26379 by default) asked for the current primary of the group `PRIMARY`,
//!   again on every reconnection, so a failover is followed.
//!
//! `valkey` may replace `redis` in every scheme (same protocol). A user name may precede the
//! hosts (`redis+cluster://tollgate@a,b,c`) for ACL users; the password comes from a file, never
//! from the URL (a URL ends up in process listings and logs), and is sent to the data nodes, not
//! to the Sentinels.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, ConnectionAddr, IntoConnectionInfo, TlsCertificates, TlsMode};

/// Seed nodes or Sentinels in one address, at most (a typo'd list should not open hundreds of
/// connections).
pub const MAX_HOSTS: usize = 64;
/// The Sentinel port when none is given.
pub const SENTINEL_PORT: u16 = 26379;

/// Why the Redis settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Not an address the agent takes.
    #[error("--ratelimit-redis {url}: {why}")]
    Url {
        /// The URL (without a password).
        url: String,
        /// Why.
        why: String,
    },
    /// A file cannot be read.
    #[error("{flag} {}: {source}", path.display())]
    File {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A setting that needs `--ratelimit-redis`.
    #[error("{0} needs --ratelimit-redis")]
    NeedsRedis(&'static str),
}

/// How the agent reaches the shared counters.
#[derive(Clone)]
pub(crate) enum Topology {
    /// One primary.
    Single(Box<Client>),
    /// A Redis Cluster, from its seed nodes.
    Cluster(Box<ClusterClient>),
    /// The primary Sentinels name (asked again on every connection). A lock: the client keeps
    /// a cache of Sentinel connections and needs `&mut` to ask.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

/// Where the shared counters are, and how to log in.
#[derive(Clone)]
pub struct RedisSettings {
    pub(crate) topology: Topology,
    address: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// One `HOST[:PORT]` of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    host: String,
    port: u16,
}

impl Host {
    /// `host:port`, bracketed if IPv6 (for URLs and messages).
    fn display(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A `+cluster` or `+sentinel` address taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Multi {
    tls: bool,
    user: Option<String>,
    hosts: Vec<Host>,
    /// The path's segments (`/PRIMARY/DB` of a Sentinel address).
    path: Vec<String>,
}

/// Splits `[user@]h1[:p1],h2[:p2]...[/path]` (what follows `://`). `default_port` for hosts
/// without one.
fn parse_multi(rest: &str, tls: bool, default_port: u16) -> Result<Multi, String> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    if rest.contains(['?', '#']) {
        return Err("no query or fragment is taken".into());
    }
    let (user, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let user = match user {
        Some(u) if u.contains(':') => {
            return Err("has a password: put it in the file of --ratelimit-redis-password-file instead (a URL ends up in process listings and logs)".into())
        }
        Some("") => return Err("an empty user name before '@'".into()),
        Some(u) => Some(
            percent_decode(u).ok_or_else(|| format!("user name \"{u}\": bad percent-encoding"))?,
        ),
        None => None,
    };
    if hosts.is_empty() {
        return Err("no host".into());
    }
    let mut list = Vec::new();
    for (i, h) in hosts.split(',').enumerate() {
        let at = |why: String| format!("host {} (\"{h}\"): {why}", i + 1);
        if h.is_empty() {
            return Err(at("empty (a stray comma?)".into()));
        }
        let (host, port) = if let Some(v6) = h.strip_prefix('[') {
            let Some(end) = v6.find(']') else {
                return Err(at("an IPv6 address without its closing ']'".into()));
            };
            let host = &v6[..end];
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(at("not an IPv6 address inside [ ]".into()));
            }
            match &v6[end + 1..] {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(at("expected ':PORT' after ']'".into())),
                },
            }
        } else {
            match h.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (h, None),
            }
        };
        if host.is_empty() {
            return Err(at("no host name".into()));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(at("not a host name or address".into()));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(at(format!("port \"{p}\": not 1 to 65535"))),
            },
        };
        let host = Host {
            host: host.to_owned(),
            port,
        };
        if list.contains(&host) {
            return Err(at("given twice".into()));
        }
        list.push(host);
    }
    if list.len() > MAX_HOSTS {
        return Err(format!("{} hosts: at most {MAX_HOSTS}", list.len()));
    }
    let path = if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').map(str::to_owned).collect()
    };
    Ok(Multi {
        tls,
        user,
        hosts: list,
        path,
    })
}

/// `%XX` decoding of a user name (what `url` does for the single-host form).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The password of `--ratelimit-redis-password-file`.
fn read_password(path: Option<&Path>) -> Result<Option<String>, SettingsError> {
    let Some(path) = path else { return Ok(None) };
    let password = std::fs::read_to_string(path).map_err(|source| SettingsError::File {
        flag: "--ratelimit-redis-password-file",
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(password.trim_end_matches(['\r', '\n']).to_owned()))
}

/// The PEM of `--ratelimit-redis-ca-file`.
fn read_ca(path: Option<&Path>) -> Result<Option<Vec<u8>>, SettingsError> {
    let Some(path) = path else { return Ok(None) };
    std::fs::read(path)
        .map(Some)
        .map_err(|source| SettingsError::File {
            flag: "--ratelimit-redis-ca-file",
            path: path.to_owned(),
            source,
        })
}

impl RedisSettings {
    /// Settings from `--ratelimit-redis URL`, `--ratelimit-redis-password-file` and
    /// `--ratelimit-redis-ca-file`, checked now (a bad one stops the agent at start).
    pub fn new(
        url: &str,
        password_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Result<RedisSettings, SettingsError> {
        let bad = |why: &str| SettingsError::Url {
            url: redacted(url),
            why: why.to_owned(),
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("not a URL: use redis://HOST[:PORT][/DB], redis+cluster://HOST[:PORT],HOST[:PORT],... or redis+sentinel://HOST[:PORT],.../PRIMARY"));
        };
        let (kind, tls) = match scheme.to_ascii_lowercase().as_str() {
            "redis" | "valkey" => ("single", false),
            "rediss" | "valkeys" => ("single", true),
            "redis+cluster" | "valkey+cluster" => ("cluster", false),
            "rediss+cluster" | "valkeys+cluster" => ("cluster", true),
            "redis+sentinel" | "valkey+sentinel" => ("sentinel", false),
            "rediss+sentinel" | "valkeys+sentinel" => ("sentinel", true),
            other => {
                return Err(bad(&format!(
                    "scheme \"{other}\": use redis:// or rediss:// (TLS), with +cluster (Redis Cluster seed nodes) or +sentinel (Sentinels) for those"
                )))
            }
        };
        if ca_file.is_some() && !tls {
            return Err(bad(
                "--ratelimit-redis-ca-file is for TLS: use a rediss:// address",
            ));
        }
        if tls {
            install_crypto_provider();
        }
        let password = read_password(password_file)?;
        let ca = read_ca(ca_file)?;
        let certs = || TlsCertificates {
            client_tls: None,
            root_cert: ca.clone(),
        };
        match kind {
            "single" => single(url, tls, password, ca.is_some().then(certs)).map_err(|e| bad(&e)),
            "cluster" => {
                let m = parse_multi(rest, tls, 6379).map_err(|e| bad(&e))?;
                if !(m.path.is_empty() || m.path == [""]) {
                    return Err(bad(
                        "a Redis Cluster has database 0 only: no /DB after the seed nodes",
                    ));
                }
                let scheme = if tls { "rediss" } else { "redis" };
                let nodes: Vec<String> = m
                    .hosts
                    .iter()
                    .map(|h| format!("{scheme}://{}", h.display()))
                    .collect();
                let mut b = ClusterClientBuilder::new(nodes)
                    .connection_timeout(super::SYNC_TIMEOUT)
                    .response_timeout(super::SYNC_TIMEOUT)
                    // A MOVED or ASK (a resharding, a failover) is followed once within a
                    // sync; a node that stays down fails the sync (the fallback), not a
                    // request.
                    .retries(1);
                if let Some(u) = &m.user {
                    b = b.username(u);
                }
                if let Some(p) = &password {
                    b = b.password(p);
                }
                if tls {
                    b = b.tls(TlsMode::Secure);
                    if ca.is_some() {
                        b = b.certs(certs());
                    }
                }
                let client = b.build().map_err(|e| bad(&e.to_string()))?;
                Ok(RedisSettings {
                    topology: Topology::Cluster(Box::new(client)),
                    address: format!(
                        "{scheme}+cluster://{}",
                        m.hosts
                            .iter()
                            .map(Host::display)
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                })
            }
            _ => {
                let m = parse_multi(rest, tls, SENTINEL_PORT).map_err(|e| bad(&e))?;
                let (primary, db) = match m.path.as_slice() {
                    [p] if !p.is_empty() => (p.clone(), 0),
                    [p, db] if !p.is_empty() => match db.parse::<i64>() {
                        Ok(db) if (0..=i64::from(i32::MAX)).contains(&db) => (p.clone(), db),
                        _ => return Err(bad(&format!("database \"{db}\": not a number"))),
                    },
                    _ => {
                        return Err(bad(
                            "no primary name: redis+sentinel://SENTINEL[:PORT],.../PRIMARY[/DB] (the name of `sentinel monitor PRIMARY ...`)",
                        ))
                    }
                };
                let primary = percent_decode(&primary)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| bad("primary name: bad percent-encoding"))?;
                let addrs = m.hosts.iter().map(|h| {
                    if tls {
                        ConnectionAddr::TcpTls {
                            host: h.host.clone(),
                            port: h.port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(h.host.clone(), h.port)
                    }
                });
                let mut b = SentinelClientBuilder::new(addrs, &primary, SentinelServerType::Master)
                    .map_err(|e| bad(&e.to_string()))?
                    .set_client_to_redis_db(db);
                if let Some(u) = &m.user {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = &password {
                    b = b.set_client_to_redis_password(p);
                }
                if tls {
                    b = b
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if ca.is_some() {
                        b = b
                            .set_client_to_redis_certificates(certs())
                            .set_client_to_sentinel_certificates(certs());
                    }
                }
                let client = b.build().map_err(|e| bad(&e.to_string()))?;
                let scheme = if tls { "rediss" } else { "redis" };
                Ok(RedisSettings {
                    topology: Topology::Sentinel(Arc::new(tokio::sync::Mutex::new(client))),
                    address: format!(
                        "{scheme}+sentinel://{}/{primary}",
                        m.hosts
                            .iter()
                            .map(Host::display)
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                })
            }
        }
    }

    /// The address without credentials: `redis://host:port`, `redis+cluster://a:p,b:p`,
    /// `redis+sentinel://s:p/PRIMARY`.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// The topology's name, for `/status`: `standalone`, `cluster` or `sentinel`.
    pub fn kind(&self) -> &'static str {
        match self.topology {
            Topology::Single(_) => "standalone",
            Topology::Cluster(_) => "cluster",
            Topology::Sentinel(_) => "sentinel",
        }
    }
}

/// The settings of one primary: `redis://` or `rediss://` `[user@]host[:port][/db]`.
fn single(
    url: &str,
    tls: bool,
    password: Option<String>,
    certs: Option<TlsCertificates>,
) -> Result<RedisSettings, String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    if parsed.password().is_some() {
        return Err("has a password: put it in the file of --ratelimit-redis-password-file instead (a URL ends up in process listings and logs)".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("no query or fragment is taken".into());
    }
    if parsed.host_str().is_some_and(|h| h.contains(',')) {
        return Err(
            "several hosts: use redis+cluster:// (Redis Cluster) or redis+sentinel:// (Sentinels)"
                .into(),
        );
    }
    // The client knows redis:// and rediss:// only: Valkey speaks the same protocol.
    let mut normalised = parsed.clone();
    let _ = normalised.set_scheme(if tls { "rediss" } else { "redis" });
    let mut info = normalised
        .as_str()
        .into_connection_info()
        .map_err(|e| e.to_string())?;
    if let Some(password) = password {
        let redis = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(redis);
    }
    let client = match certs {
        Some(certs) => Client::build_with_tls(info, certs),
        None => Client::open(info),
    }
    .map_err(|e| e.to_string())?;
    let address = format!(
        "{}://{}:{}",
        if tls { "rediss" } else { "redis" },
        parsed.host_str().unwrap_or_default(),
        parsed.port().unwrap_or(6379)
    );
    Ok(RedisSettings {
        topology: Topology::Single(Box::new(client)),
        address,
    })
}

/// `url` without its credentials, for messages: a password given by mistake in the URL must not
/// end up in the log that refuses it.
fn redacted(url: &str) -> String {
    // Whatever stands between the scheme and the last '@' of the authority may be a password
    // (`user:pass@`, also in host lists, which `url` cannot parse).
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) if url[start..start + at].contains(':') => {
            let user = &url[start..start + at];
            let name = user.split_once(':').map_or(user, |(n, _)| n);
            format!("{}{name}:***{}", &url[..start], &url[start + at..])
        }
        _ => url.to_owned(),
    }
}

/// rustls needs one process-wide crypto provider; the proxy uses ring everywhere.
fn install_crypto_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        RedisSettings::new(url, None, None).unwrap_err().to_string()
    }

    #[test]
    fn cluster_and_sentinel_addresses_are_taken_apart() {
        let m = parse_multi("tollgate@a:7000,b,[::1]:7002", false, 6379).unwrap();
        assert_eq!(m.user.as_deref(), Some("tollgate"));
        assert_eq!(
            m.hosts.iter().map(Host::display).collect::<Vec<_>>(),
            ["a:7000", "b:6379", "[::1]:7002"]
        );
        assert!(m.path.is_empty());
        let m = parse_multi("s1,s2:26380/mymaster/2", true, SENTINEL_PORT).unwrap();
        assert_eq!(m.hosts[0].port, 26379);
        assert_eq!(m.path, ["mymaster", "2"]);

        let c = RedisSettings::new("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", None, None)
            .unwrap();
        assert_eq!(c.kind(), "cluster");
        assert_eq!(c.address(), "redis+cluster://127.0.0.1:7000,127.0.0.1:7001");
        let c = RedisSettings::new("valkey+cluster://h1/", None, None).unwrap();
        assert_eq!(c.address(), "redis+cluster://h1:6379");
        let s =
            RedisSettings::new("redis+sentinel://10.0.0.1,10.0.0.2/main/3", None, None).unwrap();
        assert_eq!(s.kind(), "sentinel");
        assert_eq!(
            s.address(),
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/main"
        );
        let t = RedisSettings::new("rediss+cluster://tollgate@h1:7000", None, None).unwrap();
        assert_eq!(t.address(), "rediss+cluster://h1:7000");
        assert_eq!(
            RedisSettings::new("redis://127.0.0.1:6390/2", None, None)
                .unwrap()
                .kind(),
            "standalone"
        );
    }

    #[test]
    fn bad_addresses_are_refused_with_the_reason_and_no_password() {
        for (url, says) in [
            ("redis+cluster://", "no host"),
            ("redis+cluster://a,,b", "host 2 (\"\"): empty"),
            ("redis+cluster://a:0", "port \"0\""),
            ("redis+cluster://a:70000", "port \"70000\""),
            ("redis+cluster://a,a:6379", "given twice"),
            ("redis+cluster://[::1", "closing ']'"),
            ("redis+cluster://[zz]:1", "not an IPv6 address"),
            ("redis+cluster://a b", "not a host name"),
            ("redis+cluster://a/1", "database 0 only"),
            ("redis+cluster://a?x=1", "no query"),
            ("redis+cluster://u:s3cret@a,b", "password-file instead"),
            ("redis+sentinel://s1,s2", "no primary name"),
            ("redis+sentinel://s1/", "no primary name"),
            ("redis+sentinel://s1/m/x", "database \"x\""),
            ("redis+sentinel://u:s3cret@s1/m", "password-file instead"),
            ("redis://a,b", "several hosts"),
            ("redis://:s3cret@127.0.0.1", "password-file instead"),
            ("http://127.0.0.1", "scheme \"http\""),
            ("127.0.0.1:6379", "not a URL"),
        ] {
            let e = err(url);
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        let many = format!(
            "redis+cluster://{}",
            (0..65)
                .map(|i| format!("h{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(err(&many).contains("at most 64"));
        assert_eq!(
            redacted("redis+cluster://u:s3cret@a,b/x"),
            "redis+cluster://u:***@a,b/x"
        );
    }
}
