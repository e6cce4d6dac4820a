//! From an apply through the Kubernetes API to enforcement in the kernel: the real agent
//! (`tollgate run --source kubernetes`) watches the fake API server of the tests crate (in this
//! process, on loopback); each trial applies an L4Policy with one more deny rule, as `kubectl
//! apply` would, and measures until the agent's XDP program drops a packet from the newly
//! denied source. The method is push.rs's: "enforced" is judged by running the pinned XDP
//! program with `BPF_PROG_TEST_RUN` on a frame from the new source arriving on the agent's
//! interface, every 0.5 ms. Also counted, by the fake API server: the watch connections the
//! agent holds open (run as the DaemonSet runs it: `--node-name`, `--tls-secrets-dir`).
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya_obj::programs::xdp::XdpAttachType;
use tollgate_compile::l4::packet::{Packet, L4};
use tollgate_dataplane::testrun::{frame, FrameOptions, XDP_DROP};
use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer};

use super::agent::{spread, Agent, Network, Place, Rebuild};
use super::{blocklist_policy, load_average, yaml_of, Report};

/// The agent runs as the DaemonSet runs it, for this node (so that it watches its Node too);
/// the log of the last scenario is kept.
static PLACE: Place = Place {
    net: Network {
        iface: "tgbkube0",
        peer: "tgbkube1",
        netns: "tgb-kube",
        base: "/run/tollgate-bench-kube",
    },
    node: "tgb-kube-node",
    admin_port: 19495,
    kept_log: "/tmp/tollgate-bench-kube-agent.log",
};

/// The fake API server, an agent watching it, and the pinned program to probe.
struct Scenario {
    /// First, so that the agent stops before the fake API server.
    agent: Agent,
    fake: FakeApiServer,
    xdp: Xdp,
    ifindex: u32,
    trial: u32,
}

/// What one trial measured (ms).
#[derive(Debug, Clone, Copy, Default)]
struct Trial {
    to_enforced: f64,
    rebuild: Rebuild,
}

impl Scenario {
    /// `rules` deny rules in `objects` L4Policies stored in the fake, and an agent that has
    /// enforced them.
    fn start(rules: usize, objects: usize) -> Scenario {
        PLACE.net.setup();
        let ifindex: u32 =
            std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", PLACE.net.iface))
                .expect("ifindex")
                .trim()
                .parse()
                .expect("ifindex");

        let fake = FakeApiServer::start(tollgate_kinds());
        let policy = blocklist_policy(rules);
        for (i, chunk) in policy.rules.chunks(rules.div_ceil(objects)).enumerate() {
            let mut p = policy.clone();
            p.name = format!("bench-{i:03}");
            p.rules = chunk.to_vec();
            fake.apply_yaml(&yaml_of(&p)).expect("store a policy");
        }
        fake.put(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": PLACE.node, "labels": {"kubernetes.io/hostname": PLACE.node}},
        }))
        .expect("the Node");
        let agent = Agent::start(&PLACE, &fake, &[]);
        let deadline = Instant::now() + Duration::from_secs(120);
        while agent.applied().is_empty() {
            assert!(
                Instant::now() < deadline,
                "no revision applied:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let xdp = Xdp::from_pin(
            format!("{}/bpf/tollgate/progs/tollgate_xdp", PLACE.net.base),
            XdpAttachType::Interface,
        )
        .expect("the pinned XDP program");
        Scenario {
            agent,
            fake,
            xdp,
            ifindex,
            trial: 0,
        }
    }

    /// The verdict of the pinned program for a UDP packet from `src` arriving on the interface.
    fn verdict(&mut self, src: Ipv4Addr) -> u32 {
        let f = frame(
            &Packet {
                src: IpAddr::V4(src),
                protocol: 17,
                l4: L4::Port(53),
            },
            FrameOptions::default(),
        );
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, ... }.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(f.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.ifindex.to_ne_bytes());
        let mut out = vec![0u8; f.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&f);
        opts.data_out = Some(&mut out);
        opts.ctx_in = Some(&ctx);
        opts.repeat = 1;
        self.xdp
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN on the pinned program")
            .return_value
    }

    /// Applies L4Policy `applied` with a deny rule for one more source; returns what it took
    /// until the kernel drops that source.
    fn trial(&mut self) -> Trial {
        self.trial += 1;
        let n = self.trial;
        // A single change after a quiet spell (changes closer together are one debounced
        // rebuild, which is another measurement).
        std::thread::sleep(Duration::from_millis(400));
        let src = Ipv4Addr::new(100, 64, (n / 250) as u8, (n % 250) as u8 + 1);
        assert_ne!(self.verdict(src), XDP_DROP, "{src} is not denied yet");
        let mut yaml = String::from(
            "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: applied }\nspec:\n  defaultAction: allow\n  rules:\n",
        );
        for i in 1..=n {
            let s = Ipv4Addr::new(100, 64, (i / 250) as u8, (i % 250) as u8 + 1);
            yaml.push_str(&format!(
                "    - name: applied-{i}\n      action: deny\n      from: [\"{s}/32\"]\n"
            ));
        }
        let applied_before = self.agent.applied().len();
        self.fake.apply_yaml(&yaml).expect("apply");
        // The object is stored: the API server would answer `kubectl apply` now.
        let stored = Instant::now();
        let deadline = stored + Duration::from_secs(60);
        while self.verdict(src) != XDP_DROP {
            assert!(
                Instant::now() < deadline,
                "{src} was never dropped:\n{}",
                self.agent.log_text()
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        let enforced = Instant::now();
        Trial {
            to_enforced: (enforced - stored).as_secs_f64() * 1e3,
            rebuild: self.agent.rebuild_after(applied_before),
        }
    }
}

fn stats(v: &[Trial], f: impl Fn(&Trial) -> f64) -> (f64, f64, f64) {
    spread(v.iter().map(f).collect())
}

/// The section of docs/benchmarks.md.
pub fn run(report: &mut Report) {
    let mut rows = Vec::new();
    let mut watches = Vec::new();
    let load_before = load_average();
    for (rules, objects, rounds) in [(10, 1, 20), (100_000, 100, 7)] {
        let rounds = if report.quick() { 3 } else { rounds };
        let mut scenario = Scenario::start(rules, objects);
        let trials: Vec<Trial> = (0..rounds).map(|_| scenario.trial()).collect();
        let by_resource: Vec<String> = scenario
            .fake
            .open_watches()
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        watches.push((
            rules,
            scenario.fake.open_watch_count(),
            scenario.fake.peak_open_watches(),
            by_resource.join(", "),
        ));
        drop(scenario);
        let (med, lo, hi) = stats(&trials, |t| t.to_enforced);
        rows.push(format!(
            "| {rules} rules in {objects} L4Policies | {rounds} | {med:.0} ms | {hi:.0} ms | {lo:.0} ms | {:.1} | {:.0} | {:.1} |",
            stats(&trials, |t| t.rebuild.read).0,
            stats(&trials, |t| t.rebuild.compile).0,
            stats(&trials, |t| t.rebuild.apply).0,
        ));
    }
    let load_after = load_average();
    let watch_rows: Vec<String> = watches
        .iter()
        .map(|(rules, open, peak, by)| format!("| {rules} rules | {open} | {peak} | {by} |"))
        .collect();
    let md = format!(
        "| policy in the cluster | trials | apply → enforced in the kernel, p50 | max | min | read ms | parse + compile ms | apply until enforced ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n{}\n\n\
         | scenario | watch connections open at the end | most open at once | by resource |\n|---|---:|---:|---|\n{}\n\n\
         Targets (issue 11): apply → enforced p50 ≤ 100 ms and max ≤ 500 ms with 10 rules, max ≤ 1.5 s with 100,000 rules; \
         at most 15 watch connections per agent (counted by the fake API server: watch requests whose response is still open).\n\n\
         Machine load average (1, 5, 15 min) before: {load_before}; after: {load_after}.\n\n\
         Method. The real agent (`tollgate run --source kubernetes --node-name --tls-secrets-dir`, as the DaemonSet runs it; release build) watches the fake API server of the tests \
         crate (`tollgate_tests::kube_fake`, plain HTTP on loopback, in the benchmark's process) on a veth interface. The \
         cluster holds the policy in the given number of L4Policies; each trial, after 0.4 s of quiet, stores L4Policy \
         `applied` with one more deny rule (a new /32) as `kubectl apply` would. The clock starts when the object is stored \
         (when the API server would answer the apply) and stops when the agent's pinned XDP program, run with \
         `BPF_PROG_TEST_RUN` on a frame from the new source arriving on the agent's interface, returns `XDP_DROP` (probed \
         every 0.5 ms). The time includes the watch event, the source's wake-up of the agent (at once for a change after a \
         quiet spell; the changes of a burst are coalesced), reading the stores into a revision, parse + compile (only the changed object is parsed again) \
         and the apply; the breakdown comes from the agent's log line for the revision.\n",
        rows.join("\n"),
        watch_rows.join("\n"),
    );
    report.section("Kubernetes source: apply to enforcement", md);
}
