//! Unit tests of `git.rs` and its parts: against local repositories made with the `git`
//! command, and against servers on loopback that refuse, stall or send too much.
use super::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `files` (path in the work tree, content) into `repo`, creating their directories,
/// and commits everything with `message`.
fn commit_files(repo: &Path, files: &[(&str, &[u8])], message: &str) {
    for (path, content) in files {
        let path = repo.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", message]);
}

/// A new repository, branch `main`, whose first commit holds `files`.
fn repo_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q", "-b", "main"]);
    commit_files(work.path(), files, "one");
    work
}

/// The error of a fetch of `reference` from `url` (the whole repository) that must fail.
fn fetch_err(url: &str, reference: &str, options: &GitOptions, cache: &Path) -> GitError {
    GitSource::open(url, reference, "", options, cache)
        .unwrap()
        .fetch()
        .unwrap_err()
}

#[test]
fn a_commit_is_read_whole_and_a_new_commit_is_a_new_revision() {
    let work = repo_with(&[
        ("policies/edge/a.yaml", b"a: 1\n"),
        ("policies/README.md", b"not policy\n"),
        ("other.yaml", b"outside the path\n"),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let repo = work.path();
    let url = format!("file://{}", repo.display());
    let src = GitSource::open(
        &url,
        "main",
        "policies",
        &GitOptions::default(),
        cache.path(),
    )
    .unwrap();
    let first = src.fetch().unwrap();
    let docs = src.read(first).unwrap();
    assert_eq!(docs.revision.id, first.to_string());
    assert_eq!(
        docs.files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        vec!["edge/a.yaml"]
    );

    commit_files(repo, &[("policies/b.yml", b"b: 2\n")], "two");
    git(repo, &["tag", "v2"]);
    let second = src.fetch().unwrap();
    assert_ne!(first, second);
    assert_eq!(src.read(second).unwrap().files.len(), 2);
    // A tag and a commit id are refs too.
    assert_eq!(
        GitSource::open(&url, "v2", "policies", &GitOptions::default(), cache.path())
            .unwrap()
            .fetch()
            .unwrap(),
        second
    );
    assert_eq!(
        GitSource::open(
            &url,
            &first.to_string(),
            "policies",
            &GitOptions::default(),
            cache.path()
        )
        .unwrap()
        .fetch()
        .unwrap(),
        first
    );
    // Errors name what is wrong.
    let e = fetch_err(&url, "no-such-branch", &GitOptions::default(), cache.path());
    assert!(e.to_string().contains("no-such-branch"), "{e}");
    let e = GitSource::open(
        &url,
        "main",
        "nowhere",
        &GitOptions::default(),
        cache.path(),
    )
    .unwrap();
    let e = e.read(e.fetch().unwrap()).unwrap_err();
    assert!(e.to_string().contains("nowhere"), "{e}");
    let e = fetch_err(
        "file:///nonexistent/repo",
        "main",
        &GitOptions::default(),
        cache.path(),
    );
    assert!(e.to_string().contains("fetch"), "{e}");
}

#[test]
fn a_branch_or_tag_deleted_on_the_server_is_an_error_not_followed_from_the_cache() {
    let work = repo_with(&[("a.yaml", b"a: 1\n")]);
    let repo = work.path();
    git(repo, &["branch", "live"]);
    git(repo, &["tag", "pinned"]);
    let cache = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.display());
    let open = |reference: &str| {
        GitSource::open(&url, reference, "", &GitOptions::default(), cache.path()).unwrap()
    };
    let (live, pinned) = (open("live"), open("pinned"));
    assert!(live.fetch().is_ok() && pinned.fetch().is_ok());
    git(repo, &["branch", "-D", "live"]);
    git(repo, &["tag", "-d", "pinned"]);
    for (src, name) in [(&live, "live"), (&pinned, "pinned")] {
        let e = src.fetch().unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "\"{name}\" is neither a branch, a tag nor a commit"
            )),
            "{name}: {e}"
        );
    }
}

#[test]
fn git_urls_are_told_from_directories() {
    for url in [
        "file:///srv/policy",
        "git://git.example.com/policy",
        "https://git.example.com/org/policy.git",
        "http://127.0.0.1:8080/policy",
        "ssh://git@git.example.com:2222/org/policy.git",
        "git@git.example.com:org/policy.git",
        "git@[2001:db8::1]:policy.git",
        "htps://typo.example.com/policy",
    ] {
        assert!(is_git_url(url), "{url}");
    }
    for dir in [
        "/etc/tollgate/policies",
        "policies",
        "./a:b",
        "policies:v2",
        "/srv/a@b:c",
    ] {
        assert!(!is_git_url(dir), "{dir}");
    }
    for (url, transport) in [
        (
            "git@git.example.com:org/policy.git",
            Transport::Ssh {
                user: Some("git".into()),
                host: "git.example.com".into(),
                port: 22,
            },
        ),
        (
            "ssh://deploy@[2001:db8::1]:2222/policy.git",
            Transport::Ssh {
                user: Some("deploy".into()),
                host: "2001:db8::1".into(),
                port: 2222,
            },
        ),
        (
            "https://bot%40example@git.example.com/p.git",
            Transport::Http {
                tls: true,
                user: Some("bot@example".into()),
            },
        ),
    ] {
        assert_eq!(Transport::parse(url), Ok(transport), "{url}");
    }
}

/// Every way a URL is shown: the refusal of a password, `describe()` (the revision's
/// source in `/status` and metrics), the revision read, and libgit2's errors, which quote
/// the path they were given.
#[test]
fn a_password_or_a_token_in_the_url_is_never_shown() {
    let cache = tempfile::tempdir().unwrap();
    let e = GitSource::open(
        "https://bot:hunter2@git.example.com/policy?token=SECRET",
        "main",
        "",
        &GitOptions::default(),
        cache.path(),
    )
    .err()
    .expect("a password in the URL is refused");
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("hunter2") && !text.contains("SECRET"),
        "{text}"
    );

    // A token in the query of a URL the source accepts.
    let work = repo_with(&[("a.yaml", b"a: 1\n")]);
    let repo = work.path();
    let url = format!("file://{}?private_token=S%45CRET", repo.display());
    let src = GitSource::open(&url, "main", "", &GitOptions::default(), cache.path()).unwrap();
    assert_eq!(
        src.describe(),
        format!("file://{}?***@main", repo.display())
    );
    let shown = |e: GitError| format!("{e} {e:?}");
    let mut said = vec![src.describe()];
    match src.fetch() {
        // libgit2 takes the query for part of the path: a repository that is not there.
        Err(e) => said.push(shown(e)),
        Ok(commit) => said.push(format!("{:?}", src.read(commit).unwrap().revision)),
    }
    said.push(shown(src.rev_parse("no-such-ref").unwrap_err()));
    for text in &said {
        assert!(
            !text.contains("SECRET") && !text.contains("S%45CRET"),
            "{text}"
        );
    }
    assert!(said[1].contains("?***"), "{said:?}");
    let https = GitSource::open(
        "https://127.0.0.1:19533/policy.git?token=SECRET",
        "main",
        "",
        &GitOptions {
            timeout: Duration::from_secs(2),
            ..GitOptions::default()
        },
        cache.path(),
    )
    .unwrap();
    let text = shown(https.fetch().unwrap_err());
    assert!(!text.contains("SECRET"), "{text}");
    assert!(
        text.contains("https://127.0.0.1:19533/policy.git?***"),
        "{text}"
    );
}

fn open_err(url: &str, options: &GitOptions) -> String {
    let cache = tempfile::tempdir().unwrap();
    match GitSource::open(url, "main", "", options, cache.path()) {
        Ok(_) => panic!("{url} with {options:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn urls_and_settings_are_checked_before_anything_goes_on_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let known_hosts = file(
        "known_hosts",
        "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEdk0ygxc2Asekl6EM2z/9euZ2KaemvsQowOfmtoJhHA\n",
    );
    let key = file("id_ed25519", "not checked before the server asks\n");
    let none = GitOptions::default();

    let e = open_err("ftp://git.example.com/policy", &none);
    assert!(e.contains("unsupported scheme ftp://"), "{e}");
    let e = open_err("https://bot:hunter2@git.example.com/policy", &none);
    assert!(e.contains("carries a password"), "{e}");
    assert!(e.contains("https://bot:***@git.example.com/policy"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let e = open_err("ssh:///policy", &none);
    assert!(e.contains("bad source URL"), "{e}");

    let ssh = "ssh://git@git.example.com/policy.git";
    let e = open_err(ssh, &none);
    assert!(e.contains("needs --git-known-hosts"), "{e}");
    let e = open_err(
        ssh,
        &GitOptions {
            known_hosts: Some(known_hosts.clone()),
            ..GitOptions::default()
        },
    );
    assert!(e.contains("needs --git-ssh-key"), "{e}");
    let e = open_err(
        ssh,
        &GitOptions {
            known_hosts: Some(dir.path().join("missing")),
            ssh_key: Some(key.clone()),
            ..GitOptions::default()
        },
    );
    assert!(e.contains("cannot read the known_hosts file"), "{e}");
    let bad_known_hosts = file("bad_known_hosts", "git.example.com ssh-ed25519\n");
    let e = open_err(
        ssh,
        &GitOptions {
            known_hosts: Some(bad_known_hosts.clone()),
            ssh_key: Some(key.clone()),
            ..GitOptions::default()
        },
    );
    assert!(
        e.contains(&format!(
            "{}:1: not a known_hosts entry",
            bad_known_hosts.display()
        )),
        "{e}"
    );
    let cache = tempfile::tempdir().unwrap();
    let ssh_options = GitOptions {
        known_hosts: Some(known_hosts.clone()),
        ssh_key: Some(key.clone()),
        ..GitOptions::default()
    };
    GitSource::open(ssh, "main", "", &ssh_options, cache.path()).unwrap();
    GitSource::open(
        "git@git.example.com:policy.git",
        "main",
        "",
        &ssh_options,
        cache.path(),
    )
    .unwrap();

    let https = "https://git.example.com/policy.git";
    let e = open_err(
        https,
        &GitOptions {
            password_file: Some(dir.path().join("missing")),
            ..GitOptions::default()
        },
    );
    assert!(e.contains("--git-password-file"), "{e}");
    let e = open_err(
        https,
        &GitOptions {
            password_file: Some(file("empty", "\n")),
            ..GitOptions::default()
        },
    );
    assert!(e.contains("the file is empty"), "{e}");
    let e = open_err(
        https,
        &GitOptions {
            password_file: Some(file("token", "t0ken\n")),
            password_env: Some("PATH".into()),
            ..GitOptions::default()
        },
    );
    assert!(e.contains("not both"), "{e}");
    let e = open_err(
        https,
        &GitOptions {
            password_env: Some("TOLLGATE_TEST_NO_SUCH_VARIABLE".into()),
            ..GitOptions::default()
        },
    );
    assert!(
        e.contains("--git-password-env: TOLLGATE_TEST_NO_SUCH_VARIABLE is not set"),
        "{e}"
    );
    let e = open_err(
        https,
        &GitOptions {
            ca_file: Some(file("not-a-ca.pem", "hello\n")),
            ..GitOptions::default()
        },
    );
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = open_err(
        https,
        &GitOptions {
            timeout: Duration::ZERO,
            ..GitOptions::default()
        },
    );
    assert!(e.contains("--git-timeout"), "{e}");

    // The secret: trailing newlines trimmed, read again on every use.
    let token = file("token", "t0ken\r\n");
    let src = GitSource::open(
        https,
        "main",
        "",
        &GitOptions {
            password_file: Some(token.clone()),
            ..GitOptions::default()
        },
        cache.path(),
    )
    .unwrap();
    assert_eq!(src.password().unwrap().as_deref(), Some("t0ken"));
    std::fs::write(&token, "rotated").unwrap();
    assert_eq!(src.password().unwrap().as_deref(), Some("rotated"));
    assert_eq!(src.username(None), DEFAULT_USERNAME);
    let src = GitSource::open(
        "https://alice@git.example.com/p.git",
        "main",
        "",
        &GitOptions::default(),
        cache.path(),
    )
    .unwrap();
    assert_eq!(src.username(None), "alice");
}

/// An HTTP server on 127.0.0.1:`port` that answers every request with 401 (basic auth
/// required), for `requests` requests; returns what it was sent.
fn refusing_server(port: u16, requests: usize) -> std::thread::JoinHandle<Vec<String>> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = vec![0u8; 8192];
            let n = stream.read(&mut buf).unwrap_or(0);
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        seen
    })
}

#[test]
fn a_server_that_wants_credentials_gets_them_once_and_a_refusal_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:19532/policy";
    // No credentials configured.
    let server = refusing_server(19532, 1);
    let cache = tempfile::tempdir().unwrap();
    let e = fetch_err(url, "main", &GitOptions::default(), cache.path());
    assert_eq!(
        e.to_string(),
        format!("git: {url} asks for credentials (a user and password) and none are configured for it: --git-password-file or --git-password-env (with --git-username) for http(s), --git-ssh-key for ssh")
    );
    server.join().unwrap();

    // Credentials the server refuses: sent once (basic auth), then reported.
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let server = refusing_server(19532, 2);
    let options = GitOptions {
        username: Some("deploy".into()),
        password_file: Some(token),
        ..GitOptions::default()
    };
    let e = fetch_err(url, "main", &options, cache.path());
    assert_eq!(
        e.to_string(),
        format!("git: authentication failed for {url} (user deploy)")
    );
    let seen = server.join().unwrap();
    // "deploy:t0ken", base64: the trailing newline of the file is not part of it.
    assert!(
        seen[1].contains("Authorization: Basic ZGVwbG95OnQwa2Vu"),
        "{seen:?}"
    );
    assert!(!seen[0].contains("Authorization"), "{seen:?}");
}

#[test]
fn a_fetch_over_the_size_cap_is_aborted() {
    // 256 KiB that do not compress (an xorshift stream).
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let blob: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let work = repo_with(&[("blob.bin", &blob), ("a.yaml", b"a: 1\n")]);
    let cache = tempfile::tempdir().unwrap();
    let url = format!("file://{}", work.path().display());
    let small = GitOptions {
        max_size: 64 * 1024,
        ..GitOptions::default()
    };
    let e = fetch_err(&url, "main", &small, cache.path());
    assert!(
        matches!(e, GitError::TooLarge { limit, .. } if limit == 64 * 1024),
        "{e}"
    );
    // Nothing of the refused fetch is left behind: the ref is unknown to the mirror.
    let mirror = GitSource::open(&url, "main", "", &small, cache.path()).unwrap();
    assert!(mirror.resolve().is_err());
    // Under a cap it fits, the same repository is fetched.
    let roomy = GitOptions {
        max_size: 1024 * 1024,
        ..GitOptions::default()
    };
    GitSource::open(&url, "main", "", &roomy, cache.path())
        .unwrap()
        .fetch()
        .unwrap();
    let e = GitError::TooLarge {
        url: url.clone(),
        limit: 64 * 1024,
    };
    assert!(
        e.to_string()
            .contains("more than --git-max-size 64 KiB (65536 bytes)"),
        "{e}"
    );
}

#[test]
fn a_server_that_never_answers_times_out_and_a_closed_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:19530").unwrap();
    let held = std::thread::spawn(move || {
        let mut streams = Vec::new();
        for s in listener.incoming().take(2) {
            streams.push(s);
        }
        std::thread::sleep(Duration::from_secs(8));
    });
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let key = dir.path().join("id");
    std::fs::write(&key, "unused").unwrap();
    let options = GitOptions {
        timeout: Duration::from_secs(1),
        known_hosts: Some(known_hosts),
        ssh_key: Some(key),
        ..GitOptions::default()
    };
    for url in [
        "https://127.0.0.1:19530/policy",
        "ssh://git@127.0.0.1:19530/policy",
    ] {
        let cache = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let e = fetch_err(url, "main", &options, cache.path());
        assert!(matches!(e, GitError::Timeout { .. }), "{url}: {e}");
        assert_eq!(
            e.to_string(),
            format!("git: fetching {url} took longer than --git-timeout 1s; aborted")
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{url}: {:?}",
            started.elapsed()
        );
    }
    drop(held);

    // Nothing listens on 19531.
    let cache = tempfile::tempdir().unwrap();
    let e = fetch_err(
        "https://127.0.0.1:19531/policy",
        "main",
        &options,
        cache.path(),
    );
    assert!(
        e.to_string()
            .starts_with("git: cannot reach https://127.0.0.1:19531/policy: "),
        "{e}"
    );
}
