//! The runtime's log lines: text or JSON on stderr, colours only on a terminal, the noisy
//! targets of dependencies (cranelift's timings, sqlx's statements) quiet unless `RUST_LOG`
//! names them, and spans exported as traces when a collector is set.

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, Registry};
use tracing_subscriber::{EnvFilter, Layer as _};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target` and the event's fields
    /// (`message`, `status`, `duration_ms`, `reason`, `broker`, `tenant`, `request`, `method`,
    /// `route`, ...); at DEBUG also its span's, under `span`.
    Json,
}

/// Dependencies whose debug lines drown the runtime's own (cranelift alone writes thousands
/// per compile): kept at `warn` unless `RUST_LOG` names them.
const NOISY: &[&str] = &[
    "cranelift_codegen",
    "cranelift_frontend",
    "cranelift_entity",
    "regalloc2",
    "wasmtime_cranelift",
    "wasmtime_internal_cranelift",
    "wasmtime_environ",
    "wasmtime_internal_cache",
    "wasmparser",
    "sqlx",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
];

/// The filter: `RUST_LOG` if set (else `default_level`), with [`NOISY`] targets at `warn`
/// unless it names them.
pub fn filter(default_level: &str) -> EnvFilter {
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let base = if asked.trim().is_empty() {
        default_level
    } else {
        &asked
    };
    directives(base).unwrap_or_else(|error| {
        eprintln!("brokerbox: RUST_LOG is invalid ({error}); logging at {default_level}");
        EnvFilter::new(default_level)
    })
}

/// `base` (`RUST_LOG`'s syntax), with the [`NOISY`] targets it does not name at `warn`.
fn directives(base: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    let quiet = NOISY
        .iter()
        .filter(|target| !base.contains(*target))
        .map(|target| format!("{target}=warn"));
    let directives = std::iter::once(base.to_string())
        .chain(quiet)
        .collect::<Vec<_>>();
    EnvFilter::try_new(directives.join(","))
}

/// Installs the process's logger (and the trace exporter, when `traces` is given): every
/// event passing [`filter`] goes to stderr as `format` says; every `brokerbox` span at DEBUG
/// or above (requests, operations, guest calls) and event at INFO or above goes to the
/// exporter whatever the filter.
pub fn init(format: LogFormat, default_level: &str, traces: Option<&super::traces::Traces>) {
    use std::io::IsTerminal as _;
    let ansi = std::io::stderr().is_terminal();
    let stderr = BoxMakeWriter::new(std::io::stderr);
    init_with(format, default_level, traces, (stderr, ansi));
}

/// Changes which lines the logger writes while the process runs (the bench measures the
/// lifecycles with the INFO lines and without them this way).
#[derive(Clone)]
pub struct Level(reload::Handle<EnvFilter, Registry>);

impl Level {
    /// Writes what `level` (`RUST_LOG`'s syntax, such as `info` or `off`) lets through from
    /// now on, with the [`NOISY`] targets as in [`filter`].
    ///
    /// # Errors
    /// When `level` does not parse, or no logger was installed by this handle's
    /// [`init_with`] (another was first).
    pub fn set(&self, level: &str) -> anyhow::Result<()> {
        self.0.reload(directives(level)?)?;
        Ok(())
    }
}

/// [`init`], writing to `writer` (with colours when `ansi`): the bench logs into `/dev/null`
/// to pay what a runtime pays for its lines, and turns them off with the returned [`Level`].
pub fn init_with(
    format: LogFormat,
    default_level: &str,
    traces: Option<&super::traces::Traces>,
    (writer, ansi): (BoxMakeWriter, bool),
) -> Level {
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    };
    let (filter, level) = reload::Layer::new(filter(default_level));
    let fmt = fmt.with_filter(filter);
    let otel = traces.map(|traces| {
        let spans = tracing_subscriber::filter::filter_fn(|meta| {
            let level = if meta.is_span() {
                tracing::Level::DEBUG
            } else {
                tracing::Level::INFO
            };
            meta.target().starts_with("brokerbox") && *meta.level() <= level
        });
        traces.layer().with_filter(spans)
    });
    // A second init (tests run several commands in one process) keeps the first logger.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Level(level)
}
