//! Brokers in Python and JavaScript (measurement 8): what a component costs to load (size, first
//! compile, start-up from the artifact cache, a new version's compile with and without the
//! incremental function cache), the per-call floor against the Rust file broker, OSB lifecycles
//! of the Python file broker against the same logic natively on openbrokerapi, and resident
//! memory per Python broker.

use crate::report::{Report, Section};
use crate::site::{guest, manifest, Osb, Site};
use crate::stats::{micros, millis, ratio, Samples};
use crate::Bench;
use brokerbox::sandbox::cache::ComponentCache;
use brokerbox::sandbox::limits::Limits;
use brokerbox::sandbox::{
    new_engine, new_engine_caching, Allocation, CallInfo, EpochTicker, Grants, Guest, Sandbox,
};
use brokerbox::RunningServer;
use brokerbox_tests::guests;
use std::time::Instant;

/// `calls_per_instance` of the warm-instance rows and runs.
const WARM_CALLS: u32 = 1000;

/// The guests compared: label, component path, broker name.
const GUESTS: [(&str, &str, &str); 3] = [
    ("Rust file-broker", guests::FILE_BROKER, "file-broker"),
    (
        "Python python-file-broker",
        guests::PYTHON_FILE_BROKER,
        "python-file-broker",
    ),
    (
        "JavaScript js-kv-broker",
        guests::JS_KV_BROKER,
        "js-kv-broker",
    ),
];

/// Runs the measurement.
pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    loading(bench, report)?;
    floor(bench, report)?;
    if !bench.smoke {
        lifecycles(bench, report)?;
        crate::density::python_memory(bench, report)?;
    }
    Ok(())
}

/// Size, first compile, start-up from the artifact, and a changed version's compile.
fn loading(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let mut section = Section::new(
        "8a. Loading a component: size, compile, start-up from the artifact cache, new version",
        &[
            "guest",
            "component",
            "first compile, no function cache",
            "first compile, function cache on",
            "load from artifact (restart)",
            "new version, function cache warm",
        ],
    );
    let plain = new_engine()?;
    // A smoke run (a debug build) compiles only the small Rust guest: a debug cranelift takes
    // minutes over a Python component.
    let guests = if bench.smoke {
        &GUESTS[..1]
    } else {
        &GUESTS[..]
    };
    for (label, path, _) in guests {
        let wasm = guest(path)?;
        let started = Instant::now();
        ComponentCache::in_memory().get_or_compile(&plain, &wasm)?;
        let compile = started.elapsed();
        // Production: artifacts and compiled functions in one directory.
        let dir = tempfile::tempdir()?;
        let cache = ComponentCache::on_disk(dir.path())?;
        let caching = new_engine_caching(Allocation::production(), cache.function_store())?;
        let started = Instant::now();
        cache.get_or_compile(&caching, &wasm)?;
        let cold = started.elapsed();
        let restarted = ComponentCache::on_disk(dir.path())?;
        let started = Instant::now();
        restarted.get_or_compile(&caching, &wasm)?;
        let load = started.elapsed();
        // A new version: the same functions with another payload, as a changed Python or JS
        // app is (the interpreter's functions stay; the snapshot of the app's heap changes).
        let next = crate::site::variant(&wasm, "v2");
        let started = Instant::now();
        cache.get_or_compile(&caching, &next)?;
        let warm = started.elapsed();
        section.row(vec![
            label.to_string(),
            format!("{:.1} MB", wasm.len() as f64 / 1e6),
            millis(compile),
            millis(cold),
            millis(load),
            millis(warm),
        ]);
    }
    section.note(
        "Release runtime, production engine settings, compiling on this machine's cores. \
         \"Function cache\": wasmtime's incremental compilation over the artifact dir (each \
         compiled function kept by content). \"New version\": the component with a custom \
         section added, compiled after the previous version: what a reload of a changed Python \
         or JavaScript broker costs, since its interpreter's functions do not change (a changed \
         Python app lives in the heap snapshot, a data segment).",
    );
    report.section(section);
    Ok(())
}

/// Fresh instance + provision, and fresh instance + catalog, for each language.
fn floor(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    // Production, and for the Python broker also an engine keeping more of each instance's
    // memory resident between calls (CPython touches megabytes of its snapshot per call).
    let production = new_engine()?;
    let resident = |mib: usize| {
        new_engine_caching(
            Allocation::PoolingResident {
                keep_resident: mib * 1024 * 1024,
                pagemap_scan: true,
            },
            None,
        )
    };
    let (resident8, resident32) = (resident(8)?, resident(32)?);
    let _tickers = [
        EpochTicker::start(production.clone()),
        EpochTicker::start(resident8.clone()),
        EpochTicker::start(resident32.clone()),
    ];
    // Compiled components come from the artifact dir the end-to-end tests fill (the same
    // engine settings), so a smoke run in a debug build does not compile them again.
    let artifacts = brokerbox_tests::repo_root().join("target/test-artifacts");
    let sandboxes = [
        Sandbox::with_engine(production, ComponentCache::on_disk(&artifacts)?),
        Sandbox::with_engine(resident8, ComponentCache::on_disk(&artifacts)?),
        Sandbox::with_engine(resident32, ComponentCache::on_disk(&artifacts)?),
    ];
    // (guest, engine, row label, calls_per_instance)
    let runs = [
        (GUESTS[0], 0, "", 1),
        (GUESTS[1], 0, "", 1),
        (GUESTS[1], 1, ", 8 MiB kept resident per slot", 1),
        (GUESTS[1], 2, ", 32 MiB kept resident per slot", 1),
        (GUESTS[2], 0, "", 1),
        (
            GUESTS[0],
            0,
            ", warm instance (calls_per_instance)",
            WARM_CALLS,
        ),
        (
            GUESTS[1],
            0,
            ", warm instance (calls_per_instance)",
            WARM_CALLS,
        ),
        (
            GUESTS[2],
            0,
            ", warm instance (calls_per_instance)",
            WARM_CALLS,
        ),
    ];
    // A smoke run skips the other engine settings (their artifacts may not be compatible).
    let runs: Vec<_> = runs
        .into_iter()
        .filter(|(_, engine, _, _)| !bench.smoke || *engine == 0)
        .collect();
    let shm = std::path::Path::new("/dev/shm");
    let files = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let state = tempfile::tempdir()?;
    let url = format!("sqlite://{}", state.path().join("kv.db").display());
    let store = bench
        .server
        .block_on(brokerbox::store::open_ephemeral(&url))?;
    let kv_store: std::sync::Arc<dyn brokerbox::store::KvStore> = store.clone();
    let info = CallInfo::default();
    let calls = bench.scaled(300, 5);
    let mut section = Section::new(
        "8b. Per-call floor by language: fresh instance + one call + drop, or one call on a warm \
         instance (in process)",
        &[
            "guest",
            "provision median",
            "provision p99",
            "catalog median",
            "catalog p99",
            "held by its idle instance",
        ],
    );
    let mut medians = Vec::new();
    for (run, ((label, path, name), engine, setting, calls_per_instance)) in
        runs.into_iter().enumerate()
    {
        let sandbox = &sandboxes[engine];
        let wasm = guest(path)?;
        let grants = Grants {
            files_dir: Some(files.path().to_path_buf()),
            kv: Some(brokerbox::sandbox::kv::KvGrant {
                store: kv_store.clone(),
                quota_bytes: 1 << 30,
            }),
            ..Grants::default()
        };
        let limits = Limits {
            calls_per_instance,
            ..Limits::default()
        };
        let guest = Guest::load(sandbox, name, name, &wasm, limits, grants)?;
        let (provisions, catalogs) = bench.server.block_on(async {
            let catalog = guest.catalog(&info).await?;
            let service = &catalog.services[0];
            let (service, plan) = (service.id.clone(), service.plans[0].id.clone());
            let mut provisions = Vec::new();
            let mut catalogs = Vec::new();
            for i in 0..calls + 20 {
                let request =
                    crate::site::provision_request(&service, &plan, &format!("floor-{run}-{i}"));
                let started = Instant::now();
                guest.provision(&info, request).await?;
                if i >= 20 {
                    provisions.push(started.elapsed());
                }
                let started = Instant::now();
                guest.catalog(&info).await?;
                if i >= 20 {
                    catalogs.push(started.elapsed());
                }
            }
            anyhow::Ok((Samples::new(provisions), Samples::new(catalogs)))
        })?;
        // What its warm instance held while idle: the resident memory its drop gave back.
        let held = if calls_per_instance > 1 {
            let pid = std::process::id();
            let before = crate::report::rss_kib(pid).unwrap_or(0);
            drop(guest);
            let after = crate::report::rss_kib(pid).unwrap_or(0);
            format!("{:.1} MiB", before.saturating_sub(after) as f64 / 1024.0)
        } else {
            "-".to_string()
        };
        medians.push(provisions.p50());
        section.row(vec![
            format!("{label}{setting}"),
            micros(provisions.p50()),
            micros(provisions.p99()),
            micros(catalogs.p50()),
            micros(catalogs.p99()),
            held,
        ]);
    }
    // Rows by index in the full run; a smoke run has rows 0, 1, 4, 5, 6, 7 of it.
    let row = |full: usize| {
        let smoke = [
            Some(0),
            Some(1),
            None,
            None,
            Some(2),
            Some(3),
            Some(4),
            Some(5),
        ];
        let index = if bench.smoke { smoke[full] } else { Some(full) };
        index.map_or(medians[1], |i| medians[i]).as_secs_f64()
    };
    section.note(format!(
        "Production engine (1 MiB of each slot kept resident) unless the row says otherwise; \
         release build. The Rust and Python brokers write a file (tmpfs) per provision; the \
         JavaScript broker (no file API in its engine) reads and writes its key-value store \
         (SQLite, durable). \"Warm instance\": the manifest's `calls_per_instance = \
         {WARM_CALLS}`, so calls reuse one instance (module state carries over; docs/security.md); \
         what it holds while idle is the resident memory given back when it is dropped. \
         Provision medians: Python / Rust {:.1}×, JavaScript / Rust {:.1}×; Python with 32 MiB \
         resident / production {:.2}×; warm / fresh: Rust {:.2}×, Python {:.2}×, JavaScript \
         {:.2}×.",
        ratio(row(1), row(0)),
        ratio(row(4), row(0)),
        ratio(row(3), row(1)),
        ratio(row(5), row(0)),
        ratio(row(6), row(1)),
        ratio(row(7), row(4)),
    ));
    report.section(section);
    Ok(())
}

/// OSB lifecycles over HTTP: the Python file broker in brokerbox (a fresh instance per call, and
/// warm instances) against the same logic on openbrokerapi (gunicorn, 2 sync workers), with the
/// CPU each server spent per lifecycle.
fn lifecycles(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let site = Site::new()?;
    let (fresh, warm) = ("python-file-broker", "python-file-broker-warm");
    let wasm = guest(guests::PYTHON_FILE_BROKER)?;
    let extra = "[limits]\nmemory_mib = 64\n[grants]\nfiles = true\n";
    site.add(fresh, &wasm, &manifest(fresh, extra))?;
    // A service id of its own: service ids are unique across a runtime's brokers.
    let extra_warm = format!(
        "[limits]\nmemory_mib = 64\ncalls_per_instance = {WARM_CALLS}\n[grants]\nfiles = true\n\
         [env]\nSERVICE_ID = \"python-file-service-warm\"\n"
    );
    site.add(warm, &wasm, &manifest(warm, &extra_warm))?;
    let server = bench
        .server
        .block_on(RunningServer::start(&site.config(), bench.loopback()))?;
    let catalog = bench
        .client
        .block_on(Osb::new(crate::load::client(), server.addr, fresh).catalog())?;
    let (service, plan) = crate::site::first_plan(&catalog);
    let files = site.path().join("python-files");
    std::fs::create_dir_all(&files)?;
    let python = crate::python::PythonPeer::start(fresh, &catalog, &files)?;
    let theirs = Osb::new(crate::load::client(), python.addr, fresh);
    let lifecycle = |osb: &Osb| crate::http::lifecycle_job(osb, &service, &plan);
    let concurrency = bench.concurrency;
    let runs = [
        (fresh, "a fresh instance per call", "8c"),
        (warm, "warm instances, calls_per_instance", "8c (warm)"),
    ];
    for (name, how, number) in runs {
        let ours = Osb::new(crate::load::client(), server.addr, name);
        let (our_service, our_plan) =
            crate::site::first_plan(&bench.client.block_on(ours.catalog())?);
        // The broker completes a lifecycle before it is measured.
        bench
            .client
            .block_on(ours.lifecycle_checked(&our_service, &our_plan))?;
        let (a, b) = crate::http::alternated_cpu(
            bench,
            bench.scaled(3, 1),
            (&crate::stats::server_cpu, || {
                let job = crate::http::lifecycle_job(&ours, &our_service, &our_plan);
                bench.load(concurrency, job)
            }),
            (&|| python.cpu(), || {
                bench.load(concurrency, lifecycle(&theirs))
            }),
        );
        let (cpu_a, cpu_b) = (a.per_op_us(), b.per_op_us());
        let (a, b) = (a.load, b.load);
        crate::http::add(
            report,
            &format!(
                "{number}. OSB lifecycles of the Python broker ({how}): sandboxed in brokerbox vs \
                 native on openbrokerapi"
            ),
            "lifecycles/s",
            (
                &format!("brokerbox serving {fresh} (CPython in wasm, {how})"),
                &a,
            ),
            (
                "openbrokerapi peer, same logic (gunicorn, 2 sync workers)",
                &b,
            ),
            concurrency,
        );
        let measured = ratio(a.per_second(), b.per_second());
        report.target(
            &format!("Python broker lifecycles/s ({how}): sandboxed / native openbrokerapi"),
            format!(
                "{:.0} vs {:.0} /s = {measured:.2}× (CPU per lifecycle {cpu_a:.0} µs vs {cpu_b:.0} µs)",
                a.per_second(),
                b.per_second()
            ),
            "≥ 1.0×",
            measured >= 1.0,
        );
    }
    bench.server.block_on(server.stop())?;
    Ok(())
}
