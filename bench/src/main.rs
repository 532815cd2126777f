//! `brokerbox-bench`: measures the brokerbox runtime against baselines run side by side in the
//! same process and the same run, prints a markdown report and writes it to
//! `docs/BENCHMARKS.md`. Run it with `scripts/bench` (release build); `--smoke` runs every
//! measurement for a moment only, to prove the bench still works.

mod density;
mod floor;
mod http;
mod load;
mod native;
mod noisy;
mod polyglot;
mod python;
mod reload;
mod report;
mod site;
mod stats;

use clap::Parser;

/// The allocator the `brokerbox` binary uses, so the servers measured here allocate as it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The measurements, in the order they run.
const SECTIONS: [&str; 8] = [
    "floor", "http", "postgres", "reload", "density", "noisy", "polyglot", "all",
];

/// Command line of the bench.
#[derive(Parser)]
#[command(about = "Benchmarks brokerbox against baselines measured in the same run")]
struct Args {
    /// Seconds of load per measured round.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Only these measurements (comma-separated: floor, http, reload, density, noisy, polyglot).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    only: Vec<String>,
    /// A quick run of everything at tiny sizes (a few seconds): proves the bench works.
    #[arg(long)]
    smoke: bool,
    /// Where the report goes (its generated part; the rest of the file is kept).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What every measurement uses: a runtime for the servers, one for the load generator, and
/// the run's sizes.
pub struct Bench {
    /// Runs the servers under test (two worker threads, like a 2-core deployment).
    pub server: tokio::runtime::Runtime,
    /// Runs the load generator, on the main thread.
    pub client: tokio::runtime::Runtime,
    /// Concurrent connections of the load generator.
    pub concurrency: usize,
    /// Length of one measured round.
    pub round: Duration,
    /// Whether this is a smoke run.
    pub smoke: bool,
    /// The level of the servers' log lines (INFO as served; `off` to measure their cost).
    pub logs: brokerbox::telemetry::logs::Level,
}

impl Bench {
    /// `full` in a real run, `smoke` in a smoke run.
    pub fn scaled(&self, full: usize, smoke: usize) -> usize {
        if self.smoke {
            smoke
        } else {
            full
        }
    }

    /// An address on loopback with a free port.
    pub fn loopback(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// Serves `router` on a free loopback port, on the server runtime.
    pub fn serve(&self, router: axum::Router) -> anyhow::Result<SocketAddr> {
        let listener = self
            .server
            .block_on(tokio::net::TcpListener::bind(self.loopback()))?;
        let addr = listener.local_addr()?;
        self.server.spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(addr)
    }

    /// Runs `job` from `concurrency` workers for one round.
    pub fn load<F, Fut>(&self, concurrency: usize, job: F) -> load::LoadResult
    where
        F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        self.client.block_on(load::run(
            concurrency,
            load::Until::Elapsed(self.round),
            job,
        ))
    }

    /// Runs `ours` and `theirs` in alternating rounds (after one warm-up round each) and adds
    /// up each side's rounds.
    pub fn interleaved(
        &self,
        ours: impl Fn() -> load::LoadResult,
        theirs: impl Fn() -> load::LoadResult,
    ) -> (load::LoadResult, load::LoadResult) {
        self.alternated(self.scaled(3, 1), ours, theirs, load::LoadResult::absorb)
    }

    /// [`Bench::interleaved`] with `pairs` measured rounds each (more alternations for a
    /// difference smaller than the machine's drift), each side's rounds added up by `add`;
    /// the warm-up rounds are not counted.
    pub fn alternated<T: Default>(
        &self,
        pairs: usize,
        ours: impl Fn() -> T,
        theirs: impl Fn() -> T,
        add: impl Fn(&mut T, T),
    ) -> (T, T) {
        let _ = (ours(), theirs());
        let (mut a, mut b) = (T::default(), T::default());
        for _ in 0..pairs {
            add(&mut a, ours());
            add(&mut b, theirs());
        }
        (a, b)
    }
}

/// One measurement: runs and adds its tables and targets to the report.
type Measurement = fn(&Bench, &mut report::Report) -> anyhow::Result<()>;

fn main() -> anyhow::Result<()> {
    // `brokerbox-bench runtime ARGS...` is the brokerbox command itself: the density
    // measurement starts real runtime processes this way.
    let mut argv = std::env::args_os();
    if std::env::args_os().nth(1).is_some_and(|a| a == "runtime") {
        let program = argv.next().unwrap_or_default();
        let rest = argv.skip(1);
        let runtime = tokio::runtime::Runtime::new()?;
        return runtime.block_on(brokerbox::cli::run_from(
            std::iter::once(program).chain(rest),
        ));
    }
    let args = Args::parse();
    // The runtimes under test log as `brokerbox serve` does (INFO, a line per request) and pay
    // for it: into /dev/null, or to stderr when RUST_LOG is set.
    use brokerbox::telemetry::logs::{init_with, LogFormat};
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let writer = match std::env::var("RUST_LOG") {
        Ok(_) => BoxMakeWriter::new(std::io::stderr),
        Err(_) => {
            let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
            BoxMakeWriter::new(std::sync::Mutex::new(null))
        }
    };
    let logs = init_with(LogFormat::Text, "info", None, (writer, false));
    for section in &args.only {
        anyhow::ensure!(
            SECTIONS.contains(&section.as_str()),
            "unknown measurement {section:?}; choose from {}",
            SECTIONS.join(", ")
        );
    }
    let wanted = |name: &str| args.only.iter().any(|s| s == name || s == "all");
    let bench = Bench {
        server: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
        client: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        concurrency: args.concurrency,
        round: if args.smoke {
            Duration::from_millis(200)
        } else {
            Duration::from_secs_f64(args.seconds)
        },
        smoke: args.smoke,
        logs,
    };
    let mut report = report::Report::default();
    let steps: [(&str, Measurement); 7] = [
        ("floor", floor::run),
        ("http", http::run),
        ("postgres", http::on_postgres),
        ("reload", reload::run),
        ("density", density::run),
        ("noisy", noisy::run),
        ("polyglot", polyglot::run),
    ];
    for (name, step) in steps {
        if wanted(name) {
            eprintln!("== {name}");
            let started = std::time::Instant::now();
            step(&bench, &mut report)?;
            eprintln!("   {name} took {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    let mut command = String::from("scripts/bench");
    for arg in std::env::args().skip(1) {
        command.push(' ');
        command.push_str(&arg);
    }
    let markdown = report.markdown(&command, &report::machine());
    println!("{markdown}");
    let out = match (&args.out, args.smoke) {
        (Some(out), _) => Some(out.clone()),
        (None, false) => Some(brokerbox_tests::repo_root().join("docs/BENCHMARKS.md")),
        (None, true) => None,
    };
    if let Some(out) = out {
        report::write(&out, &markdown)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
