//! How the agent reaches the API server: as the pod it runs in (the ServiceAccount's token and
//! CA, the `KUBERNETES_SERVICE_*` variables), or with a kubeconfig. Everything is read and
//! checked when the agent starts, so that a wrong path or a broken kubeconfig is reported with
//! the other bad settings at once, not as a retry loop later.
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::Error;

/// A checked way to reach one API server.
#[derive(Clone)]
pub struct Settings {
    config: kube::Config,
    origin: String,
}

impl std::fmt::Debug for Settings {
    // kube's Config holds the bearer token: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("server", &self.server())
            .field("origin", &self.origin)
            .finish()
    }
}

impl Settings {
    /// The kubeconfig files `paths` (merged as kubectl merges a `KUBECONFIG` list: the first
    /// file that sets a value wins), or in-cluster settings when `paths` is empty.
    pub fn resolve(paths: &[PathBuf]) -> Result<Self, Error> {
        if paths.is_empty() {
            Self::in_cluster()
        } else {
            Self::from_kubeconfig(paths)
        }
    }

    /// The pod's own settings: its ServiceAccount token and CA, and the API server named by
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`.
    pub fn in_cluster() -> Result<Self, Error> {
        let config = kube::Config::incluster().map_err(|e| {
            Error::Config(format!(
                "in-cluster settings: {e} (outside a pod, give --kubeconfig PATH or set KUBECONFIG)"
            ))
        })?;
        Ok(Settings {
            config,
            origin: "in-cluster".into(),
        })
    }

    /// The current context of the kubeconfig files `paths`.
    ///
    /// Must not be called from within a tokio runtime (it runs kube's loader on a runtime of
    /// its own): the agent's command line calls it before its runtime starts.
    pub fn from_kubeconfig(paths: &[PathBuf]) -> Result<Self, Error> {
        let shown = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut merged: Option<Kubeconfig> = None;
        for path in paths {
            let one = read_kubeconfig(path)?;
            merged = Some(match merged {
                None => one,
                Some(m) => m
                    .merge(one)
                    .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?,
            });
        }
        let Some(kubeconfig) = merged else {
            return Err(Error::Config("no kubeconfig file given".into()));
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("a runtime to read the kubeconfig: {e}")))?;
        let config = runtime
            .block_on(kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &KubeConfigOptions::default(),
            ))
            .map_err(|e| Error::Config(format!("kubeconfig {shown}: {e}")))?;
        Ok(Settings {
            config,
            origin: format!("kubeconfig {shown}"),
        })
    }

    /// The API server's URL (what `describe` shows; it holds no credentials).
    pub fn server(&self) -> String {
        self.config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned()
    }

    /// The address and port the client connects to, when the server's host is an IP literal
    /// (a name is resolved by the client; the failsafe needs addresses). In a pod this is the
    /// `kubernetes` Service's ClusterIP, which kube-proxy DNATs: the replies arrive from the
    /// endpoints, see [`crate::failsafe`].
    pub fn server_endpoint(&self) -> Option<std::net::SocketAddr> {
        let url = &self.config.cluster_url;
        let host = url.host()?;
        let ip: std::net::IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let port = url
            .port_u16()
            .unwrap_or(if url.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        Some(std::net::SocketAddr::new(ip, port))
    }

    /// Where the settings came from: `in-cluster` or `kubeconfig PATH`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A client; needs a tokio runtime (the client's buffer is a task).
    pub fn client(&self) -> Result<kube::Client, Error> {
        kube::Client::try_from(self.config.clone())
            .map_err(|e| Error::Config(format!("a client for {}: {e}", self.server())))
    }
}

fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, Error> {
    Kubeconfig::read_from(path)
        .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, server: &str, namespace: &str) -> PathBuf {
        let path = dir.join(name);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: c\n    cluster:\n      server: {server}\ncontexts:\n  - name: c\n    context:\n      cluster: c\n      user: u\n      namespace: {namespace}\ncurrent-context: c\nusers:\n  - name: u\n    user:\n      token: secret-token\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_kubeconfig_names_its_server_and_never_shows_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "kc", "http://127.0.0.1:6443", "default");
        let settings = Settings::resolve(std::slice::from_ref(&path)).unwrap();
        assert_eq!(settings.server(), "http://127.0.0.1:6443");
        assert_eq!(
            settings.server_endpoint(),
            Some("127.0.0.1:6443".parse().unwrap())
        );
        assert!(settings.origin().contains("kc"));
        for (server, endpoint) in [
            ("https://[2001:db8::1]", Some("[2001:db8::1]:443")),
            ("https://192.0.2.1:8443/", Some("192.0.2.1:8443")),
            ("https://api.example.com:6443", None),
        ] {
            let path = write(dir.path(), "kc2", server, "default");
            assert_eq!(
                Settings::resolve(&[path]).unwrap().server_endpoint(),
                endpoint.map(|e| e.parse().unwrap()),
                "{server}"
            );
        }
        assert!(!format!("{settings:?}").contains("secret-token"));
    }

    #[test]
    fn the_first_kubeconfig_of_a_list_wins() {
        let dir = tempfile::tempdir().unwrap();
        let one = write(dir.path(), "one", "http://127.0.0.1:1", "a");
        let two = write(dir.path(), "two", "http://127.0.0.1:2", "b");
        assert_eq!(
            Settings::resolve(&[one, two]).unwrap().server(),
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn a_missing_or_broken_kubeconfig_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = Settings::resolve(std::slice::from_ref(&missing)).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let broken = dir.path().join("broken");
        std::fs::write(&broken, "clusters: [}").unwrap();
        let e = Settings::resolve(std::slice::from_ref(&broken)).unwrap_err();
        assert!(e.to_string().contains("broken"), "{e}");
    }
}
