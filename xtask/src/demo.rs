//! `cargo xtask demo`: a throw-away lab (a network namespace and a veth pair) where the agent
//! enforces examples/, told as a story of expected and observed outcomes.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tollgate_tests::l7::{curl_in, Backend};
use tollgate_tests::{Agent, Connect, Lab, LabConfig, TcpServer, POLICY_APPLIED};

use std::ffi::OsStr;

use crate::{cargo, command, root, run, setup, target_dir};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const WEB_PORT: u16 = 8080;
/// The API key whose salted hash is in examples/secrets/shop/orders-keys/keys (demo only).
const DEMO_API_KEY: &str = "demo-key-7f3a9c2e";
const SSH_PORT: u16 = 22;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM end the demo through its normal error path, so the lab's and the
/// agent's `Drop` clean up. (The children in our process group get the Ctrl-C too and stop.)
fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_interrupt as *const () as libc::sighandler_t) };
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Prints each demo step with what was expected and what happened.
#[derive(Default)]
struct Story {
    steps: u32,
    surprises: u32,
}

impl Story {
    fn step(&mut self, title: &str, expected: &str, got: &str, as_expected: bool) -> Result<()> {
        self.steps += 1;
        if !as_expected {
            self.surprises += 1;
        }
        println!("\n{}. {title}", self.steps);
        println!("   expected: {expected}");
        println!(
            "   got:      {got}   {}",
            if as_expected {
                "[as expected]"
            } else {
                "[UNEXPECTED]"
            }
        );
        check_interrupted()
    }
}

pub fn demo() -> Result<()> {
    setup()?;
    let mut release = cargo();
    release.args([
        "build",
        "--release",
        "-p",
        "gateway-user",
        "--bin",
        "tollgate",
    ]);
    run(release)?;
    let bin = target_dir().join("release/tollgate");
    // The lab helpers run `tollgate counters`/`detach` through TOLLGATE_BIN. Set before any
    // thread is started.
    std::env::set_var("TOLLGATE_BIN", &bin);
    catch_interrupts();

    println!("\n== Tollgate demo ==");
    println!("A lab: namespace tg-demo, veth tgdemo0 (198.18.0.1, root namespace, where tollgate attaches)");
    println!("<-> tgdemo1 (198.18.0.2, in tg-demo; also plays {SCANNER} 'scanner' and {OFFICE} 'office').");
    println!("Policy: examples/ (see examples/edge.yaml).");
    let lab = Lab::with_config(LabConfig {
        netns: "tg-demo".into(),
        veth_root: "tgdemo0".into(),
        veth_ns: "tgdemo1".into(),
        root_ip: Ipv4Addr::new(198, 18, 0, 1),
        ns_ip: Ipv4Addr::new(198, 18, 0, 2),
        prefix_len: 24,
        sources: vec![SCANNER, OFFICE],
        base_dir: PathBuf::from("/run/tollgate-demo"),
        mac_byte: 0,
        source_dir: Some(root().join("examples")),
    });
    let _web = TcpServer::start(lab.root_ip(), WEB_PORT).context("listen on 198.18.0.1:8080")?;
    // Port 22 may already have a listener (sshd on 0.0.0.0): then that one answers.
    let _ssh = TcpServer::start(lab.root_ip(), SSH_PORT).ok();

    // examples/l7 has a Gateway: its listener is bound on the lab's address only, never on
    // the machine's own interfaces.
    // The backends of examples/l7/backends.yaml (small echo servers on 127.0.0.1), and the
    // demo API key of examples/secrets (the AuthPolicy of examples/l7/auth.yaml).
    let _orders = [
        Backend::start("orders-1", 9001),
        Backend::start("orders-2", 9002),
        Backend::start("orders-canary", 9003),
    ];
    let secrets = root().join("examples/secrets");
    let secrets_arg = secrets.to_string_lossy().into_owned();
    let mut agent = Agent::start_with(
        &bin,
        &lab,
        &[
            "--gateway-address",
            "198.18.0.1",
            "--tls-secrets-dir",
            &secrets_arg,
        ],
    );
    println!(
        "\nstarted: {} run --interface tgdemo0 --source examples --gateway-address 198.18.0.1 --tls-secrets-dir examples/secrets --pin-dir {} --state-dir {} (log: {})",
        bin.display(),
        lab.pin_dir.display(),
        lab.state_dir.display(),
        agent.log_path().display()
    );
    agent
        .wait_for_log(POLICY_APPLIED, Duration::from_secs(30))
        .map_err(anyhow::Error::msg)?;
    for line in agent
        .log()
        .lines()
        .filter(|l| l.contains("attached") || l.contains(POLICY_APPLIED))
    {
        println!("agent: {line}");
    }
    check_interrupted()?;

    let mut story = Story::default();
    let me = lab.ns_ip();
    let fast = Duration::from_millis(200);

    let ping = lab.ping(me, 3, fast, Duration::from_secs(2));
    story.step(
        "ping from 198.18.0.2 (rule `ping` allows ICMP)",
        "3/3 replies",
        &format!("{}/{} replies", ping.received, ping.transmitted),
        ping.received == 3,
    )?;

    let web = lab.tcp_connect(me, WEB_PORT, Duration::from_secs(3));
    story.step(
        "TCP 198.18.0.2 -> 198.18.0.1:8080 (rule `web` allows 8080, within its rate limit)",
        "connected",
        &describe(&web),
        web == Connect::Connected,
    )?;

    let ping = lab.ping(SCANNER, 3, fast, Duration::from_secs(1));
    story.step(
        "ping from the scanner 203.0.113.7 (rule `block-scanners`: deny wins over `ping`)",
        "0/3 replies (dropped in XDP)",
        &format!("{}/{} replies", ping.received, ping.transmitted),
        ping.received == 0,
    )?;

    let web = lab.tcp_connect(SCANNER, WEB_PORT, Duration::from_secs(2));
    story.step(
        "TCP from the scanner to 8080 (deny wins over `web`)",
        "no answer (timed out)",
        &describe(&web),
        web == Connect::TimedOut,
    )?;

    let ssh = lab.tcp_connect(OFFICE, SSH_PORT, Duration::from_secs(3));
    story.step(
        "SSH (TCP 22) from the office 198.51.100.10 (rule `ssh-from-office`)",
        "reaches the host (connected, or refused if nothing listens)",
        &describe(&ssh),
        ssh.reached_host(),
    )?;

    let ssh = lab.tcp_connect(me, SSH_PORT, Duration::from_secs(2));
    story.step(
        "SSH from 198.18.0.2, not the office (no rule allows it: defaultAction deny)",
        "no answer (timed out)",
        &describe(&ssh),
        ssh == Connect::TimedOut,
    )?;

    // Over the limit: bare ACKs to 8080 at ~1000/s. Each one that passes gets a RST back
    // (no connection), so hping3's "received" counts the packets the limit let through.
    let before = lab.counters();
    let count = 1500u64;
    let started = Instant::now();
    let flood = lab.ns_run(&[
        "hping3",
        "-q",
        "-A",
        "-p",
        "8080",
        "-i",
        "u1000",
        "-c",
        &count.to_string(),
        "198.18.0.1",
    ]);
    let elapsed = started.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&flood.stdout),
        String::from_utf8_lossy(&flood.stderr)
    );
    let replies = hping_received(&text);
    let after = lab.counters();
    let passed = after.packets("web", "pass", "policy") - before.packets("web", "pass", "policy");
    let limited =
        after.packets("web", "drop", "ratelimit") - before.packets("web", "drop", "ratelimit");
    story.step(
        &format!("{count} TCP packets to 8080 from 198.18.0.2 in {elapsed:.1}s (rule `web`: 100 pps, burst 100, per source)"),
        "about 100 (burst) + 100/s pass, the rest dropped as rate-limited",
        &format!(
            "{} answered; counters: web pass +{passed}, web ratelimit drop +{limited}",
            replies.map_or("?".to_string(), |n| n.to_string())
        ),
        passed >= 50 && (passed as f64) < 100.0 + 100.0 * elapsed * 1.5 && limited >= count / 2,
    )?;

    // L7: the orders API behind the gateway on 198.18.0.1:18000 (examples/l7).
    let api = "http://api.example.com:18000/v1/orders";
    let resolve = "api.example.com:18000:198.18.0.1";
    let key = format!("X-Api-Key: {DEMO_API_KEY}");
    let r = curl_in(&lab, &["--resolve", resolve, api]);
    story.step(
        "GET /v1/orders from 198.18.0.2 without an API key (AuthPolicy orders-auth)",
        "401 with WWW-Authenticate",
        &format!(
            "{} {}",
            r.status,
            r.header("www-authenticate").unwrap_or("(no challenge)")
        ),
        r.status == 401 && r.header("www-authenticate").is_some(),
    )?;
    let r = curl_in(&lab, &["--resolve", resolve, "-H", &key, api]);
    let backend = r.header("x-backend").unwrap_or("?").to_owned();
    story.step(
        "GET /v1/orders with the demo API key (90% orders, 10% orders-canary)",
        "200 from an orders backend, consumer demo-app",
        &format!(
            "{} from {backend}, backend saw X-Tollgate-Consumer: {}",
            r.status,
            if r.status == 200 {
                r.seen_header("x-tollgate-consumer").unwrap_or_default()
            } else {
                String::new()
            }
        ),
        r.status == 200 && backend.starts_with("orders"),
    )?;
    let r = curl_in(
        &lab,
        &[
            "--resolve",
            resolve,
            "-H",
            &key,
            "http://api.example.com:18000/v0/orders/7",
        ],
    );
    story.step(
        "GET /v0/orders/7 (the old API: RequestRedirect)",
        "301 to /v1/orders/7",
        &format!(
            "{} {}",
            r.status,
            r.header("location").unwrap_or("(no Location)")
        ),
        r.status == 301
            && r.header("location")
                .is_some_and(|l| l.ends_with("/v1/orders/7")),
    )?;
    // 60 requests on one keep-alive connection (curl's URL globbing), as fast as they go.
    let burst = lab
        .ns_command(
            "curl",
            &[
                "-s",
                "--max-time",
                "20",
                "-w",
                "\nCODE:%{http_code}\n",
                "--resolve",
                resolve,
                "-H",
                &key,
                &format!("{api}?n=[1-60]"),
            ],
        )
        .output()
        .context("curl in the lab")?;
    let mut codes = std::collections::BTreeMap::new();
    for code in String::from_utf8_lossy(&burst.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("CODE:"))
    {
        *codes.entry(code.to_owned()).or_insert(0u32) += 1;
    }
    story.step(
        "60 quick requests with the key on one connection (RateLimitPolicy orders-limits: 20/s, burst 40, per client)",
        "about 40 answered 200 (the burst), the rest 429",
        &format!("{codes:?}"),
        codes.get("429").copied().unwrap_or(0) >= 10 && codes.get("200").copied().unwrap_or(0) >= 35,
    )?;

    let explain_request = command(
        bin.to_str().unwrap_or("tollgate"),
        [
            "explain",
            "--source",
            "examples",
            "--request",
            "GET http://api.example.com:18000/v1/orders",
        ],
    )
    .current_dir(root())
    .output();
    if let Ok(out) = explain_request {
        println!("\n$ tollgate explain --source examples --request 'GET http://api.example.com:18000/v1/orders'");
        print!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let explain = command(
        bin.to_str().unwrap_or("tollgate"),
        [
            "explain",
            "--source",
            "examples",
            "--packet",
            "tcp 203.0.113.7:51000 -> 198.18.0.1:22",
        ],
    )
    .current_dir(root())
    .output();
    if let Ok(out) = explain {
        println!("\n$ tollgate explain --source examples --packet 'tcp 203.0.113.7:51000 -> 198.18.0.1:22'");
        print!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    println!(
        "\n$ tollgate counters --pin-dir {} --state-dir {}",
        lab.pin_dir.display(),
        lab.state_dir.display()
    );
    let counters = command(
        bin.to_str().unwrap_or("tollgate"),
        [
            OsStr::new("counters"),
            OsStr::new("--pin-dir"),
            lab.pin_dir.as_os_str(),
        ],
    )
    .args([OsStr::new("--state-dir"), lab.state_dir.as_os_str()])
    .output()
    .context("tollgate counters")?;
    print!(
        "{}{}",
        String::from_utf8_lossy(&counters.stdout),
        String::from_utf8_lossy(&counters.stderr)
    );

    println!("\ncleaning up: agent, pins, namespace, veth, bpffs");
    drop(agent);
    drop(lab);
    if story.surprises == 0 {
        println!("demo: all {} steps as expected", story.steps);
        Ok(())
    } else {
        bail!(
            "demo: {} of {} steps did not go as expected",
            story.surprises,
            story.steps
        )
    }
}

fn describe(outcome: &Connect) -> String {
    match outcome {
        Connect::Connected => "connected".into(),
        Connect::Refused => "refused (RST: reached the host)".into(),
        Connect::TimedOut => "no answer (timed out)".into(),
        Connect::Error(e) => format!("error: {e}"),
    }
}

/// "1500 packets tramitted, 212 packets received, 86% packet loss" (hping3's spelling).
fn hping_received(output: &str) -> Option<u64> {
    let line = output.lines().find(|l| l.contains("packets received"))?;
    let before = line.split("packets received").next()?;
    before.rsplit(',').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::hping_received;

    #[test]
    fn hping_summary_is_read() {
        let out = "--- 198.18.0.1 hping statistic ---\n1500 packets tramitted, 212 packets received, 86% packet loss\n";
        assert_eq!(hping_received(out), Some(212));
        assert_eq!(hping_received("nothing"), None);
    }
}
