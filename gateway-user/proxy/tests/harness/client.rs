//! The test client: hyper's client connection over a new TCP connection for each request, as
//! HTTP/1.1 or HTTP/2 with prior knowledge (h2c), in clear or in TLS (rustls, ALPN `h2` or
//! `http/1.1`, an optional client certificate). One connection per request keeps every request
//! independent of the ones before (no pooled connection the proxy may have closed).
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpSocket;
use tokio_rustls::rustls;

/// How long one exchange (connect, request, whole response) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// A request body sent in several chunks without a length (HTTP/1.1 `Transfer-Encoding:
/// chunked`, HTTP/2 DATA frames without `content-length`).
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

type Body = Either<Full<Bytes>, Chunks>;

/// TLS settings of a client: the CA it trusts, the server name it sends (SNI) and verifies,
/// and optionally its own certificate.
#[derive(Clone)]
pub struct Tls {
    ca_pem: String,
    server_name: String,
    identity: Option<(String, String)>,
}

impl Tls {
    /// Trusts `ca_pem` only and asks for `server_name`.
    pub fn new(ca_pem: &str, server_name: &str) -> Tls {
        Tls {
            ca_pem: ca_pem.to_owned(),
            server_name: server_name.to_owned(),
            identity: None,
        }
    }

    /// Presents this client certificate (PEM chain) with its key (PEM).
    pub fn identity(mut self, cert_pem: &str, key_pem: &str) -> Tls {
        self.identity = Some((cert_pem.to_owned(), key_pem.to_owned()));
        self
    }

    fn config(&self, h2: bool) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.expect("a CA certificate")).expect("add CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .collect::<Result<_, _>>()
                        .expect("a client certificate"),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("a client key"),
                )
                .expect("client certificate and key"),
        };
        config.alpn_protocols = vec![if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        config
    }
}

/// A request to the proxy, built step by step, then sent with [`Request::send`].
#[must_use]
pub struct Request {
    port: u16,
    method: Method,
    path: String,
    host: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Body>,
    h2: bool,
    tls: Option<Tls>,
    from: Option<IpAddr>,
}

impl Request {
    /// `method path` to 127.0.0.1:`port`, with `Host: 127.0.0.1:port` unless [`Request::host`]
    /// says otherwise.
    pub fn new(port: u16, method: &str, path: &str) -> Request {
        Request {
            port,
            method: Method::from_bytes(method.as_bytes()).expect("a method"),
            path: path.to_owned(),
            host: None,
            headers: Vec::new(),
            body: None,
            h2: false,
            tls: None,
            from: None,
        }
    }

    /// The Host (HTTP/2: `:authority`).
    pub fn host(mut self, host: &str) -> Request {
        self.host = Some(host.to_owned());
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_str(value).expect("a header value"),
        ));
        self
    }

    /// Basic authentication (RFC 7617).
    pub fn basic_auth(self, user: &str, password: &str) -> Request {
        use base64::Engine;
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("authorization", &format!("Basic {creds}"))
    }

    /// A bearer token (RFC 6750).
    pub fn bearer(self, token: &str) -> Request {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// A body with a `Content-Length`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = Some(Either::Left(Full::new(body.into())));
        self
    }

    /// A body without a length, sent in these chunks.
    pub fn chunked(mut self, chunks: impl IntoIterator<Item = Bytes>) -> Request {
        self.body = Some(Either::Right(Chunks(chunks.into_iter().collect())));
        self
    }

    /// HTTP/2 (prior knowledge in clear; ALPN `h2` over TLS) instead of HTTP/1.1.
    pub fn h2(mut self) -> Request {
        self.h2 = true;
        self
    }

    /// Over TLS with these settings.
    pub fn tls(mut self, tls: &Tls) -> Request {
        self.tls = Some(tls.clone());
        self
    }

    /// Connects from this local address (another one of 127.0.0.0/8, say) instead of the one
    /// the OS picks.
    pub fn from(mut self, address: IpAddr) -> Request {
        self.from = Some(address);
        self
    }

    /// Sends the request and reads the whole response; panics when there is none.
    pub async fn send(self) -> Reply {
        let what = format!("{} {} on port {}", self.method, self.path, self.port);
        self.try_send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no response: {e}"))
    }

    /// Sends the request and reads the whole response.
    pub async fn try_send(self) -> Result<Reply, String> {
        match tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no complete response within {EXCHANGE_TIMEOUT:?}")),
        }
    }

    async fn exchange(self) -> Result<Reply, String> {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        if let Some(from) = self.from {
            socket
                .bind(SocketAddr::new(from, 0))
                .map_err(|e| format!("bind {from}: {e}"))?;
        }
        let tcp = socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        match self.tls.clone() {
            None => self.over(tcp).await,
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.config(self.h2)));
                let name = ServerName::try_from(tls.server_name.clone())
                    .map_err(|e| format!("server name: {e}"))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                self.over(stream).await
            }
        }
    }

    async fn over<S>(self, io: S) -> Result<Reply, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let host = self
            .host
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.port));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut req = http::Request::new(
            self.body
                .unwrap_or_else(|| Either::Left(Full::new(Bytes::new()))),
        );
        *req.method_mut() = self.method;
        for (k, v) in self.headers {
            req.headers_mut().append(k, v);
        }
        let resp = if self.h2 {
            // HTTP/2 carries the host as `:authority`, from an absolute URI.
            *req.uri_mut() = format!("{scheme}://{host}{}", self.path)
                .parse()
                .map_err(|e| format!("URI: {e}"))?;
            *req.version_mut() = Version::HTTP_2;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(req).await
        } else {
            *req.uri_mut() = self.path.parse().map_err(|e| format!("URI: {e}"))?;
            req.headers_mut().insert(
                http::header::HOST,
                HeaderValue::from_str(&host).map_err(|e| e.to_string())?,
            );
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(req).await
        }
        .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("response body (status {}): {e}", parts.status))?
            .to_bytes();
        Ok(Reply {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The HTTP version it came in.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The backend that answered (its `X-Backend`), `None` when the proxy answered itself.
    pub fn backend(&self) -> Option<&str> {
        self.header("x-backend")
    }
}
