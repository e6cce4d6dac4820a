//! Real Git servers on loopback for the Git source tests: smart HTTP (`git http-backend` behind
//! nginx and fcgiwrap, with basic auth, optionally over TLS with a CA made for the test) and
//! ssh (`sshd` with a generated host key and key-only login, serving through `git-upload-pack`).
//!
//! Every server runs as a child of the test process, configured from a directory at a fixed
//! path (`/run/tollgate-test-srv-<tag>`). The pids are recorded there, so a later run first ends
//! what a killed earlier run left (only processes whose command line still names the directory),
//! and dropping the value ends the processes and removes the directory, also when a test panics.

use std::fs;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{http_get, run_ok};

pub use crate::gitrepo::git;

/// A new repository with a `main` branch in `dir` (created).
pub fn init_repo(dir: &Path) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    git(dir, &["init", "-q", "-b", "main"]);
}

/// Writes `file` (relative to the repository) and commits everything; the new commit's id.
pub fn commit(repo: &Path, file: &str, content: &[u8], message: &str) -> String {
    let path = repo.join(file);
    fs::create_dir_all(path.parent().expect("a file in the repository")).unwrap();
    fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "nothing listens on 127.0.0.1:{port} after {timeout:?}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The agent's `/status` JSON on its admin port (`None` while it does not answer).
pub fn agent_status(admin: u16) -> Option<Value> {
    let (code, body) = http_get(admin, "/status", "")?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Waits until the agent's `/status` has a `last_error` containing `needle`; returns it.
pub fn wait_for_last_error(admin: u16, needle: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(status) = agent_status(admin) {
            if let Some(e) = status["last_error"].as_str() {
                if e.contains(needle) {
                    return Ok(e.to_owned());
                }
            }
            last = Some(status);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no last_error containing {needle:?} in /status after {timeout:?}; last /status: {}",
                last.map(|s| s.to_string()).unwrap_or_else(|| "none".into())
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `tollgate_policy_apply_failures_total{reason="<reason>"}` from the agent's `/metrics`
/// (0 when the series does not exist yet).
pub fn apply_failures(admin: u16, reason: &str) -> u64 {
    let (_, metrics) = http_get(admin, "/metrics", "").expect("the admin server answers");
    crate::metric_value(
        &metrics,
        &format!("tollgate_policy_apply_failures_total{{reason=\"{reason}\"}} "),
    )
    .unwrap_or(0)
}

const PID_FILE: &str = "servers.pid";

/// A directory for one test's servers, and the processes started from it.
pub struct ServerDir {
    /// `/run/tollgate-test-srv-<tag>`.
    pub path: PathBuf,
    children: Vec<(String, Child)>,
}

impl ServerDir {
    /// Ends what an earlier run of `tag` left, then makes the directory afresh.
    pub fn new(tag: &str) -> ServerDir {
        assert!(
            !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_alphanumeric()),
            "server tag {tag:?} must be ASCII letters or digits"
        );
        let path = PathBuf::from(format!("/run/tollgate-test-srv-{tag}"));
        kill_recorded(&path);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        ServerDir {
            path,
            children: Vec::new(),
        }
    }

    /// A path inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Starts `cmd` with stdout and stderr in `<name>.log`, recording its pid.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) {
        let log = fs::File::create(self.file(&format!("{name}.log"))).expect("create a log");
        let log_err = log.try_clone().expect("clone the log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file(PID_FILE))
        {
            let _ = writeln!(f, "{}", child.id());
        }
        self.children.push((name.to_owned(), child));
    }

    /// What `name` has logged.
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.file(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Ends `name` (SIGKILL) and waits for it.
    pub fn stop(&mut self, name: &str) {
        self.children.retain_mut(|(n, child)| {
            if n != name {
                return true;
            }
            let _ = child.kill();
            let _ = child.wait();
            false
        });
    }

    /// Panics (with its log) if `name` has exited.
    pub fn assert_running(&mut self, name: &str) {
        let log = self.log(name);
        for (n, child) in &mut self.children {
            if n == name {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{name} exited ({status}):\n{log}");
                }
            }
        }
    }
}

impl Drop for ServerDir {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Kills the processes recorded in `dir`'s pid file whose command line still names `dir`.
fn kill_recorded(dir: &Path) {
    let Ok(pids) = fs::read_to_string(dir.join(PID_FILE)) else {
        return;
    };
    let needle = dir.to_string_lossy().into_owned();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            // SAFETY: plain kill(2) on a pid an earlier run of this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    thread::sleep(Duration::from_millis(100));
}

/// A certificate authority made for one test, with the openssl command-line tool.
pub struct TestCa {
    dir: PathBuf,
    /// The CA certificate (PEM): what the agent is given with `--git-ca-file`.
    pub cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    /// A new CA in `dir` (a P-256 key, valid for two days), named `name`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        run_ok(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                path_str(&key),
                "-out",
                path_str(&cert),
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        TestCa {
            dir: dir.to_owned(),
            cert,
            key,
        }
    }

    /// A server certificate and key signed by this CA, for 127.0.0.1 and localhost.
    pub fn server_cert(&self, name: &str) -> (PathBuf, PathBuf) {
        self.server_cert_for(name, "127.0.0.1", "IP:127.0.0.1,DNS:localhost")
    }

    /// A server certificate and key signed by this CA, with subject `CN=cn` and the
    /// subjectAltName `san` (`DNS:a.example,DNS:*.b.example`), written as `name.pem` and
    /// `name.key`.
    pub fn server_cert_for(&self, name: &str, cn: &str, san: &str) -> (PathBuf, PathBuf) {
        self.signed(name, cn, &format!("serverAuth\nsubjectAltName={san}"))
    }

    /// A client certificate (TLS client authentication) and key signed by this CA, with
    /// subject `CN=cn`, written as `name.pem` and `name.key`.
    pub fn client_cert(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.signed(name, cn, "clientAuth")
    }

    /// A certificate for `CN=cn` whose extensions end with `extendedKeyUsage=<usage>`.
    fn signed(&self, name: &str, cn: &str, usage: &str) -> (PathBuf, PathBuf) {
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        fs::write(
            &ext,
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage={usage}\n"
            ),
        )
        .unwrap();
        run_ok(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                path_str(&key),
                "-out",
                path_str(&csr),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        run_ok(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                path_str(&csr),
                "-CA",
                path_str(&self.cert),
                "-CAkey",
                path_str(&self.key),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                path_str(&ext),
                "-out",
                path_str(&cert),
            ],
        );
        (cert, key)
    }
}

/// Smart HTTP: nginx (basic auth, optionally TLS) in front of `git http-backend` run by
/// fcgiwrap, serving every repository under [`HttpGitServer::root`] as `/<name>`.
pub struct HttpGitServer {
    /// The servers' directory (configuration, logs).
    pub dir: ServerDir,
    /// The port nginx listens on (127.0.0.1).
    pub port: u16,
    /// The directory whose repositories are served.
    pub root: PathBuf,
}

impl HttpGitServer {
    /// Starts the server on 127.0.0.1:`port`; `tls`: certificate and key (else plain http);
    /// `user`/`password`: the one account basic auth accepts.
    pub fn start(
        tag: &str,
        port: u16,
        tls: Option<(&Path, &Path)>,
        user: &str,
        password: &str,
    ) -> HttpGitServer {
        let mut dir = ServerDir::new(tag);
        let root = dir.file("repos");
        fs::create_dir_all(&root).unwrap();
        let hash = run_ok("openssl", &["passwd", "-apr1", password]);
        fs::write(dir.file("htpasswd"), format!("{user}:{}\n", hash.trim())).unwrap();
        let exec_path = git(&dir.path, &["--exec-path"]);
        let backend = Path::new(&exec_path).join("git-http-backend");
        assert!(backend.is_file(), "no {}", backend.display());
        let socket = dir.file("fcgiwrap.sock");
        let base = dir.path.display().to_string();
        let (listen, tls_lines) = match tls {
            Some((cert, key)) => (
                format!("127.0.0.1:{port} ssl"),
                format!(
                    "ssl_certificate {};\n        ssl_certificate_key {};",
                    cert.display(),
                    key.display()
                ),
            ),
            None => (format!("127.0.0.1:{port}"), String::new()),
        };
        let server = format!(
            r#"    server {{
        listen {listen};
        {tls_lines}
        location / {{
            auth_basic "git";
            auth_basic_user_file {base}/htpasswd;
            fastcgi_pass unix:{socket};
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {root};
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param PATH_INFO $uri;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param REMOTE_USER $remote_user;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        }}
    }}
"#,
            socket = socket.display(),
            backend = backend.display(),
            root = root.display(),
        );
        let mut fcgi = Command::new("fcgiwrap");
        fcgi.arg("-s").arg(format!("unix:{}", socket.display()));
        dir.spawn("fcgiwrap", fcgi);
        spawn_nginx(&mut dir, &server);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = wait_for_port(port, Duration::from_secs(10)) {
            panic!(
                "{e}\nnginx: {}{}\nfcgiwrap: {}",
                dir.log("nginx"),
                fs::read_to_string(dir.file("logs/error.log")).unwrap_or_default(),
                dir.log("fcgiwrap")
            );
        }
        dir.assert_running("fcgiwrap");
        HttpGitServer { dir, port, root }
    }

    /// nginx's access and error logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "access log:\n{}\nerror log:\n{}",
            fs::read_to_string(self.dir.file("logs/access.log")).unwrap_or_default(),
            fs::read_to_string(self.dir.file("logs/error.log")).unwrap_or_default()
        )
    }
}

/// An ssh key pair made with ssh-keygen (no passphrase): the private key file and the public
/// key line (`type base64`, no comment).
pub fn ssh_keygen(path: &Path, kind: &str) -> String {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    run_ok(
        "ssh-keygen",
        &["-q", "-t", kind, "-N", "", "-C", "", "-f", path_str(path)],
    );
    let public = fs::read_to_string(format!("{}.pub", path.display())).expect("read the .pub");
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The SHA256 fingerprint `ssh-keygen -l` prints for a public key line (`SHA256:...`).
pub fn ssh_fingerprint(dir: &Path, public: &str) -> String {
    let file = dir.join("fingerprint.pub");
    fs::write(&file, format!("{public}\n")).unwrap();
    let out = run_ok("ssh-keygen", &["-l", "-E", "sha256", "-f", path_str(&file)]);
    out.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("ssh-keygen -l printed {out:?}"))
        .to_owned()
}

/// sshd on 127.0.0.1:`port`, key-only login as root (the client key in
/// `authorized_keys`), repositories served by the login shell's `git-upload-pack`.
pub struct SshGitServer {
    /// The server's directory (configuration, host keys, log).
    pub dir: ServerDir,
    /// The port.
    pub port: u16,
    /// The host keys' public lines (`type base64`), one per `host_key_types` entry.
    pub host_keys: Vec<String>,
    /// The client's private key (give it to the agent with `--git-ssh-key`).
    pub client_key: PathBuf,
    generation: u32,
}

impl SshGitServer {
    /// Starts sshd with new host keys of `host_key_types` (`ed25519`, `ecdsa`, `rsa`) and a
    /// new client key.
    pub fn start(tag: &str, port: u16, host_key_types: &[&str]) -> SshGitServer {
        let dir = ServerDir::new(tag);
        let client_key = dir.file("client_ed25519");
        let client_public = ssh_keygen(&client_key, "ed25519");
        fs::write(dir.file("authorized_keys"), format!("{client_public}\n")).unwrap();
        // sshd's privilege separation directory (made by the service, which is not running).
        let _ = fs::create_dir_all("/run/sshd");
        let mut server = SshGitServer {
            dir,
            port,
            host_keys: Vec::new(),
            client_key,
            generation: 0,
        };
        server.restart_with_new_host_keys(host_key_types);
        server
    }

    /// The name (and log file stem) of the sshd now running: one per start, so that what a
    /// session of the previous one still writes does not mix with the new server's log.
    fn name(&self) -> String {
        format!("sshd-{}", self.generation)
    }

    /// What the sshd now running has logged.
    pub fn log(&self) -> String {
        self.dir.log(&self.name())
    }

    /// Stops sshd (if it runs) and starts it again with new host keys of `host_key_types`.
    /// (Sessions the old server opened run on to their end, as with a real restart.)
    pub fn restart_with_new_host_keys(&mut self, host_key_types: &[&str]) {
        self.dir.stop(&self.name());
        self.generation += 1;
        let mut host_key_lines = String::new();
        self.host_keys.clear();
        for kind in host_key_types {
            let file = self.dir.file(&format!("host_{kind}_{}", self.generation));
            self.host_keys.push(ssh_keygen(&file, kind));
            host_key_lines.push_str(&format!("HostKey {}\n", file.display()));
        }
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\n{host_key_lines}PidFile {base}/sshd.pid\n\
             AuthorizedKeysFile {base}/authorized_keys\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nAllowUsers root\nStrictModes no\nUsePAM no\n\
             PrintMotd no\nLogLevel VERBOSE\n",
            port = self.port,
            base = self.dir.path.display(),
        );
        let config_file = self.dir.file("sshd_config");
        fs::write(&config_file, config).unwrap();
        let mut sshd = Command::new("/usr/sbin/sshd");
        sshd.args(["-D", "-e", "-f"]).arg(&config_file);
        self.dir.spawn(&self.name(), sshd);
        if let Err(e) = wait_for_port(self.port, Duration::from_secs(10)) {
            panic!("{e}\nsshd: {}", self.log());
        }
    }

    /// Stops sshd.
    pub fn stop(&mut self) {
        self.dir.stop(&self.name());
    }

    /// A known_hosts line for this server's `index`th host key (`[127.0.0.1]:port type key`).
    pub fn known_hosts_line(&self, index: usize) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_keys[index])
    }

    /// The URL of the repository at `path` (absolute) on this server.
    pub fn url(&self, path: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, path.display())
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers (nor closes them):
/// what a hung Git server looks like to a client.
pub struct SilentServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    /// How many connections it has accepted.
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SilentServer {
    /// Listens on 127.0.0.1:`port`.
    pub fn start(port: u16) -> SilentServer {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        held.push(stream);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        SilentServer {
            stop,
            thread: Some(thread),
            accepted,
        }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Asserts that pings from `from` (an address of the lab's namespace) are all dropped.
pub fn assert_dropped(lab: &crate::Lab, from: std::net::Ipv4Addr, why: &str) {
    let stats = lab.ping(from, 2, Duration::from_millis(20), Duration::from_secs(1));
    assert_eq!(
        stats.received, 0,
        "pings from {from} get through ({why}): {stats:?}"
    );
}

/// Asserts that pings from `from` all get through. One more try when none came back at all:
/// on a machine shared with other tests a whole burst can be lost to something else, and a
/// policy that drops them drops the second burst too.
pub fn assert_passes(lab: &crate::Lab, from: std::net::Ipv4Addr, why: &str) {
    for attempt in 1..=2 {
        let stats = lab.ping(from, 2, Duration::from_millis(20), Duration::from_secs(1));
        if stats.received == stats.transmitted {
            if attempt > 1 {
                eprintln!("note: the first burst of pings from {from} was lost, the second passed");
            }
            return;
        }
        assert_eq!(
            stats.received, 0,
            "pings from {from} partly answered ({why}): {stats:?}"
        );
    }
    panic!(
        "pings from {from} are dropped ({why}); counters:\n{}",
        lab.counters()
    );
}

/// Writes `nginx.conf` in `dir` (one process in the foreground; pid, logs and temporary files
/// inside `dir`) with `http_block` inside its `http {}` block, and starts nginx.
pub fn spawn_nginx(dir: &mut ServerDir, http_block: &str) {
    for sub in ["tmp", "logs"] {
        fs::create_dir_all(dir.file(sub)).unwrap();
    }
    let base = dir.path.display().to_string();
    let config = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {base}/logs/access.log;
    client_body_temp_path {base}/tmp/body;
    proxy_temp_path {base}/tmp/proxy;
    fastcgi_temp_path {base}/tmp/fastcgi;
    uwsgi_temp_path {base}/tmp/uwsgi;
    scgi_temp_path {base}/tmp/scgi;
{http_block}}}
"#
    );
    fs::write(dir.file("nginx.conf"), config).unwrap();
    let mut nginx = Command::new("nginx");
    nginx
        .arg("-p")
        .arg(&dir.path)
        .arg("-c")
        .arg(dir.file("nginx.conf"))
        .arg("-e")
        .arg(dir.file("logs/error.log"));
    dir.spawn("nginx", nginx);
}
