//! OSB lifecycles over HTTP and catalog requests (measurements 2 and 3): brokerbox serving the file
//! broker (a fresh instance per call, durable SQLite state) against the native peer and a static
//! catalog handler (see `native`), driven by the same client in interleaved rounds.

use crate::load::LoadResult;
use crate::native;
use crate::report::{Report, Section};
use crate::site::{file_broker_manifest, first_plan, guest, Osb, Site};
use crate::stats::{millis, ratio};
use crate::Bench;
use brokerbox::RunningServer;
use reqwest::{Method, StatusCode};

/// Runs both measurements.
pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let site = Site::new()?;
    let wasm = guest(brokerbox_tests::guests::FILE_BROKER)?;
    site.add("file-broker", &wasm, &file_broker_manifest("file-broker"))?;
    // The same broker with warm instances (a service id of its own: ids are unique per runtime).
    let warm_manifest = crate::site::manifest(
        WARM,
        "[limits]\ncalls_per_instance = 1000\n[grants]\nfiles = true\n\
         [env]\nSERVICE_ID = \"file-broker-warm-service\"\n",
    );
    site.add(WARM, &wasm, &warm_manifest)?;
    let server = bench
        .server
        .block_on(RunningServer::start(&site.config(), bench.loopback()))?;
    let client = crate::load::client();
    let brokerbox = Osb::new(client.clone(), server.addr, native::BROKER);
    let catalog = bench.client.block_on(brokerbox.catalog())?;
    let (service, plan) = first_plan(&catalog);

    let peer_files = site.path().join("native-files");
    std::fs::create_dir_all(&peer_files)?;
    let store_url = format!("sqlite://{}", site.path().join("native.db").display());
    let peer_router = bench.server.block_on(native::peer(
        &store_url,
        peer_files,
        Osb::authorization(native::BROKER),
        &catalog,
    ))?;
    let peer = Osb::new(client.clone(), bench.serve(peer_router)?, native::BROKER);
    let static_catalog = Osb::new(
        client,
        bench.serve(native::static_catalog(&catalog))?,
        native::BROKER,
    );

    let lifecycle = |osb: &Osb| lifecycle_job(osb, &service, &plan);
    let concurrency = bench.concurrency;
    // Both servers run on the bench's server threads, one at a time: each round's CPU is its
    // server's.
    let (ours, theirs) = alternated_cpu(
        bench,
        bench.scaled(3, 1),
        (&crate::stats::server_cpu, || {
            bench.load(concurrency, lifecycle(&brokerbox))
        }),
        (&crate::stats::server_cpu, || {
            bench.load(concurrency, lifecycle(&peer))
        }),
    );
    let (ours_us, theirs_us) = (ours.per_op_us(), theirs.per_op_us());
    let (ours, theirs) = (ours.load, theirs.load);
    add(
        report,
        "2. OSB lifecycles over HTTP: provision → bind → unbind → deprovision, synchronous",
        "lifecycles/s",
        (
            "brokerbox (file broker in wasm, fresh instance per call)",
            &ours,
        ),
        (
            "native peer (same logic in axum handlers, same SQLite store)",
            &theirs,
        ),
        concurrency,
    );
    let measured = ratio(ours.per_second(), theirs.per_second());
    report.target(
        "OSB lifecycles/s: brokerbox / native peer",
        format!(
            "{:.0} vs {:.0} /s = {measured:.2}× (CPU per lifecycle {ours_us:.0} µs vs \
             {theirs_us:.0} µs)",
            ours.per_second(),
            theirs.per_second()
        ),
        "≥ 0.9×",
        measured >= 0.9,
    );

    logging_cost(bench, report, lifecycle(&brokerbox))?;
    if !bench.smoke {
        fresh_instance_cost(bench, report, server.addr, &brokerbox, (&service, &plan))?;
    }

    let (ours, theirs) = bench.interleaved(
        || bench.load(concurrency, catalog_job(&brokerbox)),
        || bench.load(concurrency, catalog_job(&static_catalog)),
    );
    add(
        report,
        "3. Catalog: GET /v2/catalog",
        "requests/s",
        ("brokerbox", &ours),
        ("static axum handler returning the same JSON", &theirs),
        concurrency,
    );
    let measured = ratio(ours.per_second(), theirs.per_second());
    report.target(
        "catalog requests/s: brokerbox / static handler",
        format!(
            "{:.0} vs {:.0} /s = {measured:.2}×",
            ours.per_second(),
            theirs.per_second()
        ),
        "≥ 0.9×",
        measured >= 0.9,
    );
    if bench.smoke {
        // The Python peer needs PyPI (once) and several seconds: real runs only.
        bench.server.block_on(server.stop())?;
        return Ok(());
    }
    python_peer(
        bench,
        report,
        &site,
        &catalog,
        (&brokerbox, &peer),
        (&service, &plan),
    )?;
    bench.server.block_on(server.stop())?;
    Ok(())
}

/// The file broker registered a second time, with warm instances (measurement 2f).
const WARM: &str = "file-broker-warm";

/// The same lifecycles with a fresh instance per call and on warm instances (measurement 2f):
/// what the fresh instance costs over HTTP. Not a target: the runtime's default stays a fresh
/// instance per call.
fn fresh_instance_cost(
    bench: &Bench,
    report: &mut Report,
    server: std::net::SocketAddr,
    fresh: &Osb,
    (service, plan): (&str, &str),
) -> anyhow::Result<()> {
    let warm = Osb::new(crate::load::client(), server, WARM);
    let (warm_service, warm_plan) = first_plan(&bench.client.block_on(warm.catalog())?);
    bench
        .client
        .block_on(warm.lifecycle_checked(&warm_service, &warm_plan))?;
    let (a, b) = alternated_cpu(
        bench,
        bench.scaled(3, 1),
        (&crate::stats::server_cpu, || {
            bench.load(bench.concurrency, lifecycle_job(fresh, service, plan))
        }),
        (&crate::stats::server_cpu, || {
            bench.load(
                bench.concurrency,
                lifecycle_job(&warm, &warm_service, &warm_plan),
            )
        }),
    );
    let (a_us, b_us) = (a.per_op_us(), b.per_op_us());
    add(
        report,
        "2f. What the fresh instance costs: the same lifecycles on warm instances",
        "lifecycles/s",
        (
            "brokerbox, a fresh instance per call (the default)",
            &a.load,
        ),
        (
            "brokerbox, warm instances (`calls_per_instance = 1000`)",
            &b.load,
        ),
        bench.concurrency,
    );
    report.note(format!(
        "CPU per lifecycle: {a_us:.0} µs with a fresh instance per call, {b_us:.0} µs on warm \
         instances: {:.0} µs per call for making and dropping an instance under load.",
        (a_us - b_us) / 4.0
    ));
    Ok(())
}

/// The same lifecycles with the state on PostgreSQL against SQLite (measurement 2d), when
/// `BROKERBOX_TEST_POSTGRES` names a server (a fresh database is created on it), with the CPU
/// each side spent per lifecycle: the runtime's, and the PostgreSQL server's processes'.
pub fn on_postgres(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Some(server) = brokerbox_tests::postgres::server() else {
        eprintln!("   BROKERBOX_TEST_POSTGRES is not set: no PostgreSQL figures");
        return Ok(());
    };
    if bench.smoke {
        return Ok(());
    }
    let site = Site::new()?;
    let wasm = guest(brokerbox_tests::guests::FILE_BROKER)?;
    site.add("file-broker", &wasm, &file_broker_manifest("file-broker"))?;
    let lite_server = bench
        .server
        .block_on(RunningServer::start(&site.config(), bench.loopback()))?;
    let mut config = site.config();
    config.data_dir = site.path().join("pg-data");
    config.state_url = Some(
        bench
            .server
            .block_on(brokerbox_tests::postgres::fresh_database(&server)),
    );
    let pg_server = bench
        .server
        .block_on(RunningServer::start(&config, bench.loopback()))?;
    let client = crate::load::client();
    let sqlite = Osb::new(client.clone(), lite_server.addr, native::BROKER);
    let postgres = Osb::new(client, pg_server.addr, native::BROKER);
    let (service, plan) = first_plan(&bench.client.block_on(sqlite.catalog())?);
    let lifecycle = |osb: &Osb| lifecycle_job(osb, &service, &plan);
    let concurrency = bench.concurrency;
    let server_cpu = crate::stats::server_cpu;
    let pg_cpu = crate::stats::postgres_cpu;
    // Each side's share on PostgreSQL (warm-up round included): the runtime's threads, and
    // the server's processes.
    let shares = std::cell::Cell::new((std::time::Duration::ZERO, std::time::Duration::ZERO, 0));
    let (pg, lite) = alternated_cpu(
        bench,
        bench.scaled(3, 1),
        (&|| server_cpu() + pg_cpu(), || {
            let (runtime, server) = (server_cpu(), pg_cpu());
            let load = bench.load(concurrency, lifecycle(&postgres));
            let (r, s, n) = shares.get();
            shares.set((
                r + server_cpu().saturating_sub(runtime),
                s + pg_cpu().saturating_sub(server),
                n + load.latencies.len(),
            ));
            load
        }),
        (&server_cpu, || bench.load(concurrency, lifecycle(&sqlite))),
    );
    let (pg_us, lite_us) = (pg.per_op_us(), lite.per_op_us());
    let (runtime, server, lifecycles) = shares.get();
    let share_us = |cpu: std::time::Duration| cpu.as_secs_f64() * 1e6 / lifecycles.max(1) as f64;
    let (runtime_us, server_us) = (share_us(runtime), share_us(server));
    let (pg, lite) = (pg.load, lite.load);
    add(
        report,
        "2d. The same lifecycles with the state on PostgreSQL",
        "lifecycles/s",
        (
            "brokerbox on PostgreSQL (local server, synchronous_commit on)",
            &pg,
        ),
        ("brokerbox on SQLite (durable, group commit)", &lite),
        concurrency,
    );
    report.note(format!(
        "CPU per lifecycle: {pg_us:.0} µs on PostgreSQL (the runtime's and the server's \
         processes' together: both on this machine; of it the runtime {runtime_us:.0} µs and \
         the server {server_us:.0} µs), {lite_us:.0} µs on SQLite (the runtime, SQLite within)."
    ));
    let measured = ratio(pg.per_second(), lite.per_second());
    report.target(
        "OSB lifecycles/s: brokerbox on PostgreSQL / on SQLite",
        format!(
            "{:.0} vs {:.0} /s = {measured:.2}×",
            pg.per_second(),
            lite.per_second()
        ),
        "≥ 0.8×",
        measured >= 0.8,
    );
    bench.server.block_on(pg_server.stop())?;
    bench.server.block_on(lite_server.stop())?;
    Ok(())
}

/// The same lifecycles with the runtime's log lines at INFO, as `brokerbox serve` writes them
/// (a line per request, formatted, into `/dev/null`), and with them off (measurement 2e):
/// what logging costs. Metrics are counted in both.
fn logging_cost<F, Fut>(bench: &Bench, report: &mut Report, lifecycle: F) -> anyhow::Result<()>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    // Both levels are set once here, so a failure to set one ends the measurement cleanly.
    bench.logs.set("off")?;
    bench.logs.set("info")?;
    let round = |level: &str| {
        bench
            .logs
            .set(level)
            .expect("a level set before the rounds");
        bench.load(bench.concurrency, lifecycle.clone())
    };
    let server_cpu = crate::stats::server_cpu;
    // A difference of a few percent: twice the usual rounds, alternated.
    let (logged, quiet) = alternated_cpu(
        bench,
        bench.scaled(6, 1),
        (&server_cpu, || round("info")),
        (&server_cpu, || round("off")),
    );
    bench.logs.set("info")?;
    let (logged, logged_cpu, quiet, quiet_cpu) = (
        &logged.load,
        logged.per_op_us(),
        &quiet.load,
        quiet.per_op_us(),
    );
    add(
        report,
        "2e. What logging costs: the same lifecycles with the log lines at INFO and off",
        "lifecycles/s",
        ("brokerbox, INFO: a line per request (as served)", logged),
        ("brokerbox, logs off", quiet),
        bench.concurrency,
    );
    let measured = ratio(logged.per_second(), quiet.per_second());
    report.target(
        "OSB lifecycles/s: logs at INFO / logs off",
        format!(
            "{:.0} vs {:.0} /s = {measured:.2}× (CPU per lifecycle {logged_cpu:.0} µs vs \
             {quiet_cpu:.0} µs)",
            logged.per_second(),
            quiet.per_second(),
        ),
        "≥ 0.95×",
        measured >= 0.95,
    );
    Ok(())
}

/// A load, with the CPU time its server used meanwhile.
#[derive(Default)]
pub(crate) struct Spent {
    /// The load's result.
    pub load: LoadResult,
    /// The server's CPU time during it.
    pub cpu: std::time::Duration,
}

impl Spent {
    /// Runs `run`, reading the server's CPU time with `cpu` before and after.
    fn measure(cpu: &dyn Fn() -> std::time::Duration, run: impl FnOnce() -> LoadResult) -> Self {
        let before = cpu();
        let load = run();
        let cpu = cpu().saturating_sub(before);
        Spent { load, cpu }
    }

    /// Adds `other`'s load and CPU time to these.
    fn add(&mut self, other: Spent) {
        self.load.absorb(other.load);
        self.cpu += other.cpu;
    }

    /// CPU time per completed job, in µs.
    pub fn per_op_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.load.latencies.len() as f64).max(1.0)
    }
}

/// `ours` and `theirs` in `pairs` alternated rounds (as [`Bench::alternated`]), each with the
/// CPU time its server used (read by the function paired with it); warm-ups not counted.
pub(crate) fn alternated_cpu(
    bench: &Bench,
    pairs: usize,
    ours: (&dyn Fn() -> std::time::Duration, impl Fn() -> LoadResult),
    theirs: (&dyn Fn() -> std::time::Duration, impl Fn() -> LoadResult),
) -> (Spent, Spent) {
    bench.alternated(
        pairs,
        || Spent::measure(ours.0, &ours.1),
        || Spent::measure(theirs.0, &theirs.1),
        Spent::add,
    )
}

/// Lifecycles and catalog against the openbrokerapi peer (measurement 2b), and lifecycles at
/// 1, 8 and 64 connections (2c), with the CPU each server spent per lifecycle.
fn python_peer(
    bench: &Bench,
    report: &mut Report,
    site: &Site,
    catalog: &serde_json::Value,
    (brokerbox, native): (&Osb, &Osb),
    (service, plan): (&str, &str),
) -> anyhow::Result<()> {
    let files = site.path().join("python-files");
    std::fs::create_dir_all(&files)?;
    let python = crate::python::PythonPeer::start(native::BROKER, catalog, &files)?;
    let client = crate::load::client();
    let peer = Osb::new(client, python.addr, native::BROKER);
    let lifecycle = |osb: &Osb| lifecycle_job(osb, service, plan);
    let concurrency = bench.concurrency;
    let (ours, theirs) = alternated_cpu(
        bench,
        bench.scaled(3, 1),
        (&crate::stats::server_cpu, || {
            bench.load(concurrency, lifecycle(brokerbox))
        }),
        (&|| python.cpu(), || {
            bench.load(concurrency, lifecycle(&peer))
        }),
    );
    let (ours_us, theirs_us) = (ours.per_op_us(), theirs.per_op_us());
    let (ours, theirs) = (ours.load, theirs.load);
    add(
        report,
        "2b. The same lifecycles against a native Python broker (openbrokerapi)",
        "lifecycles/s",
        (
            "brokerbox (durable: the WAL synced before each answer)",
            &ours,
        ),
        (
            "openbrokerapi peer (gunicorn, 2 sync workers, nothing fsync'd)",
            &theirs,
        ),
        concurrency,
    );
    let measured_ratio = ratio(ours.per_second(), theirs.per_second());
    report.target(
        "OSB lifecycles/s: brokerbox / openbrokerapi peer",
        format!(
            "{:.0} vs {:.0} /s = {measured_ratio:.2}×",
            ours.per_second(),
            theirs.per_second()
        ),
        "≥ 2.0×",
        measured_ratio >= 2.0,
    );
    report.target(
        "CPU per lifecycle: brokerbox / openbrokerapi peer",
        format!(
            "{:.0} µs vs {:.0} µs = {:.2}×",
            ours_us,
            theirs_us,
            ratio(ours_us, theirs_us)
        ),
        "≤ 0.5×",
        ratio(ours_us, theirs_us) <= 0.5,
    );
    let (ours, theirs) = bench.interleaved(
        || bench.load(concurrency, catalog_job(brokerbox)),
        || bench.load(concurrency, catalog_job(&peer)),
    );
    let catalog_ratio = ratio(ours.per_second(), theirs.per_second());
    report.target(
        "catalog requests/s: brokerbox / openbrokerapi peer",
        format!(
            "{:.0} vs {:.0} /s = {catalog_ratio:.2}×",
            ours.per_second(),
            theirs.per_second()
        ),
        "≥ 10×",
        catalog_ratio >= 10.0,
    );
    by_concurrency(bench, report, brokerbox, native, lifecycle);
    Ok(())
}

/// Lifecycles/s and p99 of brokerbox and the native peer at 1, 8 and 64 connections: what
/// group commit costs in latency and gives in throughput.
fn by_concurrency<F, Fut>(
    bench: &Bench,
    report: &mut Report,
    brokerbox: &Osb,
    native: &Osb,
    lifecycle: impl Fn(&Osb) -> F,
) where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let mut section = Section::new(
        "2c. Lifecycles by concurrency (both on the same durable SQLite store)",
        &[
            "connections",
            "brokerbox /s",
            "brokerbox p99",
            "native peer /s",
            "native p99",
            "ratio",
        ],
    );
    for connections in [1, 8, 64] {
        let (ours, theirs) = bench.interleaved(
            || bench.load(connections, lifecycle(brokerbox)),
            || bench.load(connections, lifecycle(native)),
        );
        section.row(vec![
            connections.to_string(),
            format!("{:.0}", ours.per_second()),
            millis(ours.samples().p99()),
            format!("{:.0}", theirs.per_second()),
            millis(theirs.samples().p99()),
            format!("{:.2}×", ratio(ours.per_second(), theirs.per_second())),
        ]);
    }
    section.note(
        "Every answer waits until its commit is synced to disk; the store's writer thread commits \
         the writes that queued meanwhile as one transaction with one fsync (group commit).",
    );
    report.section(section);
}

/// Adds a table comparing `ours` with the baseline `theirs`.
pub(crate) fn add(
    report: &mut Report,
    title: &str,
    unit: &str,
    ours: (&str, &LoadResult),
    theirs: (&str, &LoadResult),
    concurrency: usize,
) {
    let mut section = Section::new(title, &["server", unit, "p50", "p99", "failed", "ratio"]);
    for (label, result) in [ours, theirs] {
        let samples = result.samples();
        section.row(vec![
            label.to_string(),
            format!("{:.0}", result.per_second()),
            millis(samples.p50()),
            millis(samples.p99()),
            result.failed.to_string(),
            format!("{:.2}×", ratio(result.per_second(), theirs.1.per_second())),
        ]);
    }
    section.note(format!(
        "{concurrency} keep-alive connections from a Rust client on 127.0.0.1 (its own thread), \
         servers in the bench process on a 2-thread tokio runtime; rounds alternate between the \
         two servers and add up."
    ));
    report.section(section);
}

/// A load job: one synchronous lifecycle of a new instance of `plan` of `service` on `osb`.
pub(crate) fn lifecycle_job(
    osb: &Osb,
    service: &str,
    plan: &str,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
       + Clone
       + Send
       + 'static {
    let osb = osb.clone();
    let (service, plan) = (service.to_string(), plan.to_string());
    move |_, _| {
        let (osb, service, plan) = (osb.clone(), service.clone(), plan.clone());
        Box::pin(async move { osb.lifecycle(&service, &plan).await })
    }
}

/// A load job: one catalog request on `osb`, expecting 200.
fn catalog_job(
    osb: &Osb,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
       + Clone
       + Send
       + 'static {
    let osb = osb.clone();
    move |_, _| {
        let osb = osb.clone();
        Box::pin(async move {
            osb.expect(Method::GET, "/v2/catalog", None, StatusCode::OK)
                .await
        })
    }
}
