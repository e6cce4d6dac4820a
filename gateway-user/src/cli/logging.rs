//! The agent's logging: its own log on stderr (text or JSON, filtered by `TOLLGATE_LOG`), the
//! L7 access log (target [`tollgate_proxy::access_log::TARGET`]) on stdout as JSON lines,
//! whatever the format and filter (`--access-log` decides which requests it has).
//!
//! Both filters are static (targets and levels only, no closure): tracing then decides once per
//! call site that a disabled span or event is off, and the libraries' trace spans on the
//! request path (h2 opens several per stream and poll) cost a load and a compare. A dynamic
//! filter (a `filter_fn`, as the agent had before) made every such call site ask the subscriber
//! each time, and the registry built and dropped every span: about a third of the agent's CPU
//! over HTTP/2 (docs/benchmarks-issue13.md, round 4).

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use tollgate_proxy::access_log::TARGET as ACCESS;

use super::LogFormat;

/// The environment variable of the agent log's filter (`EnvFilter` directives).
pub const LOG_ENV: &str = "TOLLGATE_LOG";

/// The filter when `TOLLGATE_LOG` is unset, empty or invalid.
const DEFAULT_FILTER: &str = "info";

/// The agent log's filter from `TOLLGATE_LOG`'s value: the default when unset or empty (a
/// manifest's `value: ""` must not silence the agent), and the default with the reason when the
/// value does not parse (the agent still starts: a typo in a log setting must not stop
/// enforcement). The access log's target is always off in it: those lines go to stdout only.
pub fn agent_filter(spec: Option<&str>) -> (EnvFilter, Option<String>) {
    let (filter, error) = match spec.filter(|s| !s.trim().is_empty()) {
        None => (EnvFilter::new(DEFAULT_FILTER), None),
        Some(spec) => match EnvFilter::builder().parse(spec) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(DEFAULT_FILTER),
                Some(format!(
                    "{LOG_ENV}={spec:?} is not a valid filter ({e}); logging at {DEFAULT_FILTER:?}"
                )),
            ),
        },
    };
    let off = format!("{ACCESS}=off")
        .parse()
        .expect("the access target's directive parses");
    (filter.add_directive(off), error)
}

/// The subscriber: the agent log to `agent_out`, the access log to `access_out`.
pub fn subscriber<A, B>(
    format: LogFormat,
    filter: EnvFilter,
    agent_out: A,
    access_out: B,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync
where
    A: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    B: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let agent = fmt::layer().with_writer(agent_out).with_ansi(ansi);
    let agent = match format {
        LogFormat::Text => agent.boxed(),
        LogFormat::Json => agent.json().flatten_event(true).boxed(),
    }
    .with_filter(filter);
    let access = fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(access_out)
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(ACCESS, tracing::Level::INFO),
        );
    tracing_subscriber::registry().with(agent).with(access)
}

/// Installs the subscriber for the process.
pub fn init(format: LogFormat) {
    let spec = std::env::var(LOG_ENV).ok();
    let (filter, error) = agent_filter(spec.as_deref());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    subscriber(format, filter, std::io::stderr, std::io::stdout, ansi).init();
    if let Some(error) = error {
        tracing::warn!("{error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn with(spec: Option<&str>, f: impl FnOnce()) -> (String, String) {
        let (agent, access) = (Buf::default(), Buf::default());
        let (filter, _) = agent_filter(spec);
        let sub = subscriber(
            LogFormat::Json,
            filter,
            agent.clone(),
            access.clone(),
            false,
        );
        tracing::subscriber::with_default(sub, f);
        (agent.text(), access.text())
    }

    #[test]
    fn access_lines_go_to_the_access_log_only_and_agent_lines_to_the_agent_log_only() {
        for spec in [None, Some("trace"), Some("tollgate::access=trace,debug")] {
            let (agent, access) = with(spec, || {
                tracing::info!(target: ACCESS, status = 200, "request");
                tracing::warn!(target: "tollgate::proxy", "agent line");
            });
            assert!(agent.contains("agent line"), "{spec:?}: {agent}");
            assert!(!agent.contains("request"), "{spec:?}: {agent}");
            assert!(access.contains("\"status\":200"), "{spec:?}: {access}");
            assert!(!access.contains("agent line"), "{spec:?}: {access}");
        }
    }

    #[test]
    fn the_filter_applies_to_the_agent_log() {
        let (agent, _) = with(Some("warn"), || {
            tracing::info!(target: "tollgate::proxy", "quiet");
            tracing::warn!(target: "tollgate::proxy", "loud");
        });
        assert!(
            agent.contains("loud") && !agent.contains("quiet"),
            "{agent}"
        );
        for spec in [None, Some(""), Some("  ")] {
            let (agent, _) = with(spec, || tracing::info!(target: "tollgate", "default info"));
            assert!(agent.contains("default info"), "{spec:?}: {agent}");
        }
    }

    /// The agent's subscriber for `spec`, writing where nobody reads.
    fn unheard(spec: Option<&str>) -> impl tracing::Subscriber {
        let (filter, _) = agent_filter(spec);
        subscriber(
            LogFormat::Text,
            filter,
            Buf::default(),
            Buf::default(),
            false,
        )
    }

    /// A call site of a library's, outside tracing's registry: the test asks the subscriber
    /// about it directly, as tracing does when the site is first hit. (Through the macros, the
    /// answer would be the process-wide interest, mixed with whatever subscribers the other
    /// tests of this binary have installed at that moment.)
    struct Site(&'static tracing::Metadata<'static>);

    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            self.0
        }
    }

    macro_rules! site {
        ($name:ident, $target:literal, $level:ident, $kind:ident) => {
            static $name: tracing::Metadata<'static> = tracing::Metadata::new(
                stringify!($name),
                $target,
                tracing::Level::$level,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&Site(&$name))),
                tracing::metadata::Kind::$kind,
            );
        };
    }

    site!(H2_STREAM, "h2::proto", TRACE, SPAN);
    site!(H2_POLL, "h2::codec", DEBUG, SPAN);
    site!(RUSTLS_DEBUG, "rustls::server", DEBUG, EVENT);
    site!(AGENT_INFO, "tollgate::proxy", INFO, EVENT);

    /// The cost this module is built around: a library's trace span under the default filter
    /// is off at its call site for good (interest "never"), not asked about at each hit, nor
    /// built by the registry and dropped. The dynamic filter the agent had answered
    /// "sometimes" here.
    #[test]
    fn spans_and_events_below_the_filter_are_disabled_at_their_call_site() {
        for spec in [None, Some("warn")] {
            let sub = unheard(spec);
            // The level hint lets the macros skip a call site below it without asking.
            assert_eq!(
                tracing::Subscriber::max_level_hint(&sub),
                Some(tracing::level_filters::LevelFilter::INFO),
                "{spec:?}"
            );
            for site in [&H2_STREAM, &H2_POLL, &RUSTLS_DEBUG] {
                let interest = tracing::Subscriber::register_callsite(&sub, site);
                assert!(interest.is_never(), "{spec:?}: {site:?}: {interest:?}");
            }
        }
        // And the agent's own lines are on at their call site (the default filter).
        let interest = tracing::Subscriber::register_callsite(&unheard(None), &AGENT_INFO);
        assert!(!interest.is_never(), "{interest:?}");
    }

    #[test]
    fn a_bad_filter_is_reported_and_the_default_used() {
        let (filter, error) = agent_filter(Some("tollgate=loud"));
        let error = error.expect("an error");
        assert!(
            error.contains("TOLLGATE_LOG") && error.contains("tollgate=loud"),
            "{error}"
        );
        assert_eq!(
            filter.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::INFO)
        );
        assert!(agent_filter(Some("debug,h2=off")).1.is_none());
    }
}
