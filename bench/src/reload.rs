//! Hot reload (measurement 5): the time from writing a new version of a broker (component and
//! manifest) to the first request it serves, with the component compiled and with its artifact
//! cached; and requests failed while a broker is reloaded 50 times under load next to a neighbour.
//!
//! The broker is the `trap` test guest (Rust), whose catalog shows the manifest's `VERSION`, so
//! a response tells which version served it. Each reload is what `--watch` and the admin API
//! do once they see the files: `Reloader::reload`.

use crate::load::{self, Until};
use crate::report::{Report, Section};
use crate::site::{file_broker_manifest, first_plan, guest, manifest, variant, Osb, Site};
use crate::stats::{millis, Samples};
use crate::Bench;
use brokerbox::reload::Reloader;
use brokerbox::RunningServer;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAME: &str = "trap";

fn trap_manifest(version: usize) -> String {
    manifest(NAME, &format!("[env]\nVERSION = \"{version}\"\n"))
}

/// The version in a trap catalog's description (`... (version N)`).
fn version_of(catalog: &serde_json::Value) -> Option<usize> {
    let description = catalog["services"][0]["description"].as_str()?;
    let start = description.rfind("version ")? + "version ".len();
    description[start..].trim_end_matches(')').parse().ok()
}

/// Time from writing version `version` of the trap broker (component `wasm`) to the first
/// catalog showing it. With a `reloader`, the bench reloads the broker itself right after
/// writing; without, the runtime's `--watch` has to notice the files.
async fn time_reload(
    site: &Site,
    reloader: Option<&Reloader>,
    osb: &Osb,
    wasm: &[u8],
    version: usize,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    site.add(NAME, wasm, &trap_manifest(version))?;
    if let Some(reloader) = reloader {
        reloader.reload(NAME, false).await?;
    }
    loop {
        let catalog = osb.catalog().await?;
        if version_of(&catalog) == Some(version) {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "version {version} never served"
        );
    }
}

/// Reload times with a new component each time (compiled) and alternating between two
/// components whose artifacts are cached; `version` counts on.
fn reload_times(
    bench: &Bench,
    site: &Site,
    reloader: Option<&Reloader>,
    osb: &Osb,
    trap: &[u8],
    version: &mut usize,
) -> anyhow::Result<(Samples, Samples)> {
    let samples = bench.scaled(10, 2);
    let label = if reloader.is_some() {
        "direct"
    } else {
        "watch"
    };
    bench.server.block_on(async {
        let mut compiled = Vec::new();
        for i in 0..samples {
            *version += 1;
            let wasm = variant(trap, &format!("{label}-compiled-{i}"));
            compiled.push(time_reload(site, reloader, osb, &wasm, *version).await?);
        }
        // Two versions whose artifacts are cached, alternated.
        let warm = [
            variant(trap, &format!("{label}-warm-a")),
            variant(trap, &format!("{label}-warm-b")),
        ];
        for wasm in &warm {
            *version += 1;
            time_reload(site, reloader, osb, wasm, *version).await?;
        }
        let mut cached = Vec::new();
        for i in 0..samples {
            *version += 1;
            cached.push(time_reload(site, reloader, osb, &warm[i % 2], *version).await?);
        }
        anyhow::Ok((Samples::new(compiled), Samples::new(cached)))
    })
}

/// Runs the measurements.
pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    // Through `--watch`: the bench only writes files.
    let watched = Site::new()?;
    let trap = guest(brokerbox_tests::guests::TRAP_BROKER)?;
    watched.add(NAME, &variant(&trap, "start"), &trap_manifest(0))?;
    let mut config = watched.config();
    config.watch = true;
    let server = bench
        .server
        .block_on(RunningServer::start(&config, bench.loopback()))?;
    let osb = Osb::new(load::client(), server.addr, NAME);
    // Let the watcher's first looks (which reconcile what serves) pass: measure it settled.
    std::thread::sleep(Duration::from_millis(500));
    let mut version = 0;
    let (watch_compiled, watch_cached) =
        reload_times(bench, &watched, None, &osb, &trap, &mut version)?;
    bench.server.block_on(server.stop())?;

    let site = Site::new()?;
    site.add(NAME, &variant(&trap, "start"), &trap_manifest(0))?;
    let file = guest(brokerbox_tests::guests::FILE_BROKER)?;
    site.add("file-broker", &file, &file_broker_manifest("file-broker"))?;
    let server = bench
        .server
        .block_on(RunningServer::start(&site.config(), bench.loopback()))?;
    let reloader = server.reloader.clone();
    let client = load::client();
    let osb = Osb::new(client.clone(), server.addr, NAME);
    let neighbour = Osb::new(client, server.addr, "file-broker");

    let mut version = 0;
    let (compiled, cached) =
        reload_times(bench, &site, Some(&reloader), &osb, &trap, &mut version)?;

    // 50 reloads (each a new component, compiled) under load on the broker and a neighbour.
    let reloads = bench.scaled(50, 3);
    let done = Arc::new(AtomicBool::new(false));
    let reloading = {
        let done = done.clone();
        let reloader = reloader.clone();
        let site_brokers = site.brokers();
        let trap = trap.clone();
        let first = version + 1;
        bench.server.spawn(async move {
            let result = async {
                for (i, version) in (first..first + reloads).enumerate() {
                    std::fs::write(
                        site_brokers.join(format!("{NAME}.wasm")),
                        variant(&trap, &format!("under-load-{i}")),
                    )?;
                    std::fs::write(
                        site_brokers.join(format!("{NAME}.toml")),
                        trap_manifest(version),
                    )?;
                    reloader.reload(NAME, false).await?;
                }
                anyhow::Ok(())
            }
            .await;
            done.store(true, Ordering::Relaxed);
            result
        })
    };
    let last_seen: Arc<Vec<AtomicUsize>> = Arc::new(
        (0..bench.concurrency)
            .map(|_| AtomicUsize::new(0))
            .collect(),
    );
    let backwards = Arc::new(AtomicUsize::new(0));
    let (service, plan) = bench
        .client
        .block_on(neighbour.catalog())
        .map(|c| first_plan(&c))?;
    let under_load = {
        let (osb, neighbour) = (osb.clone(), neighbour.clone());
        let (last_seen, backwards) = (last_seen.clone(), backwards.clone());
        bench.client.block_on(load::run(
            bench.concurrency,
            Until::Flag(done),
            move |worker, _| {
                let (osb, neighbour) = (osb.clone(), neighbour.clone());
                let (last_seen, backwards) = (last_seen.clone(), backwards.clone());
                let (service, plan) = (service.clone(), plan.clone());
                async move {
                    if worker % 2 == 1 {
                        return neighbour.lifecycle(&service, &plan).await;
                    }
                    let Ok(catalog) = osb.catalog().await else {
                        return false;
                    };
                    let Some(seen) = version_of(&catalog) else {
                        return false;
                    };
                    if last_seen[worker].fetch_max(seen, Ordering::Relaxed) > seen {
                        backwards.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    true
                }
            },
        ))
    };
    bench.server.block_on(reloading)??;
    let final_version = bench
        .client
        .block_on(osb.catalog())
        .ok()
        .and_then(|c| version_of(&c));

    let mut section = Section::new(
        "5. Hot reload: writing a new version → first request served by it",
        &["case", "median", "p99 / max", "samples"],
    );
    for (label, s) in [
        (
            "`--watch` notices the files: new component (compiled, artifact written)",
            &watch_compiled,
        ),
        (
            "`--watch` notices the files: component whose artifact is cached",
            &watch_cached,
        ),
        (
            "reload called right after writing: new component (compiled)",
            &compiled,
        ),
        (
            "reload called right after writing: component whose artifact is cached",
            &cached,
        ),
    ] {
        section.row(vec![
            label.into(),
            millis(s.p50()),
            millis(s.quantile(1.0)),
            s.len().to_string(),
        ]);
    }
    section.row(vec![
        format!(
            "{reloads} reloads (each compiled) under load on the broker and a neighbour: \
             requests served / failed / version seen going back"
        ),
        format!("{}", under_load.latencies.len()),
        format!("{} failed", under_load.failed),
        format!("{} backwards", backwards.load(Ordering::Relaxed)),
    ]);
    section.note(
        "Timed from before the component and manifest are written to the brokers dir until a \
         catalog request answers with the new version. `--watch` reloads on the file events of \
         the finished writes (after 5 ms of quiet, so both files load as one version); \
         \"reload called\" is the same reload without the watcher, as the admin API does when \
         an upload arrives.",
    );
    section.note(format!(
        "Under load: {} workers, half reading the reloaded broker's catalog (checking its version \
         never goes back), half running file-broker lifecycles; the last version served was {:?} \
         of {}.",
        bench.concurrency,
        final_version,
        version + reloads
    ));
    report.section(section);
    report.target(
        "reload via `--watch`, compile included (median)",
        millis(watch_compiled.p50()),
        "≤ 300 ms",
        watch_compiled.p50() <= Duration::from_millis(300),
    );
    report.target(
        "reload via `--watch`, warm artifact cache (median)",
        millis(watch_cached.p50()),
        "≤ 20 ms",
        watch_cached.p50() <= Duration::from_millis(20),
    );
    let whole = under_load.failed == 0 && final_version == Some(version + reloads);
    report.target(
        &format!("failed requests during {reloads} reloads under load"),
        format!(
            "{} of {}",
            under_load.failed,
            under_load.failed as usize + under_load.latencies.len()
        ),
        "0",
        whole,
    );
    bench.server.block_on(server.stop())?;
    Ok(())
}
