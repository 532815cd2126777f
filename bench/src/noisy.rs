//! Noisy neighbour (measurement 7): the latency of a healthy broker's lifecycles alone, and while
//! another tenant's broker burns its whole fuel budget on every call at its full concurrency.

use crate::load::{self, Until};
use crate::report::{Report, Section};
use crate::site::{file_broker_manifest, first_plan, guest, manifest, Osb, Site};
use crate::stats::{millis, ratio};
use crate::Bench;
use brokerbox::sandbox::limits::DEFAULT_MAX_CONCURRENCY;
use brokerbox::RunningServer;
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Concurrent lifecycles of the healthy broker.
const HEALTHY_CONCURRENCY: usize = 4;

/// Runs the measurement.
pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let site = Site::new()?;
    let file = guest(brokerbox_tests::guests::FILE_BROKER)?;
    site.add("healthy", &file, &file_broker_manifest("healthy"))?;
    let hostile = guest(brokerbox_tests::guests::HOSTILE_BROKER)?;
    // Another tenant, default limits: every call runs until its fuel is gone.
    // A smoke run keeps the burns short, so the calls left running end quickly.
    let limits = if bench.smoke {
        "[limits]\nfuel = 50000000\n"
    } else {
        ""
    };
    site.add("noisy", &hostile, &manifest("noisy", limits))?;
    let server = bench
        .server
        .block_on(RunningServer::start(&site.config(), bench.loopback()))?;
    let client = load::client();
    let healthy = Osb::new(client.clone(), server.addr, "healthy");
    let (service, plan) = bench
        .client
        .block_on(healthy.catalog())
        .map(|c| first_plan(&c))?;
    let lifecycle = {
        let healthy = healthy.clone();
        move |_, _| {
            let healthy = healthy.clone();
            let (service, plan) = (service.clone(), plan.clone());
            async move { healthy.lifecycle(&service, &plan).await }
        }
    };
    let _warm = bench.load(HEALTHY_CONCURRENCY, lifecycle.clone());
    let alone = bench.load(HEALTHY_CONCURRENCY, lifecycle.clone());

    // The neighbour: its full concurrency of provisions that burn all their fuel.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.addr;
    let burner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Its own client: pooled connections belong to the runtime that made them.
            let noisy = Osb::new(load::client(), addr, "noisy");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(load::run(
                DEFAULT_MAX_CONCURRENCY as usize,
                Until::Flag(stop),
                move |_, _| {
                    let noisy = noisy.clone();
                    async move {
                        let id = uuid::Uuid::new_v4();
                        let body = json!({
                            "service_id": "hostile-service", "plan_id": "fuel-plan",
                            "organization_guid": "o", "space_guid": "s",
                        });
                        // Any answer is fine; it only has to burn fuel.
                        noisy
                            .send(
                                Method::PUT,
                                &format!("/v2/service_instances/{id}"),
                                Some(&body),
                            )
                            .await
                            .is_some()
                    }
                },
            ))
        })
    };
    // Let the neighbour reach full concurrency.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let noisy_result = bench.load(HEALTHY_CONCURRENCY, lifecycle);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let burned = burner
        .join()
        .map_err(|_| anyhow::anyhow!("the noisy client panicked"))?;

    let mut section = Section::new(
        "7. Noisy neighbour: a healthy broker's lifecycles, alone and next to a fuel burner",
        &["healthy broker", "lifecycles/s", "p50", "p99", "failed"],
    );
    for (label, result) in [
        ("alone", &alone),
        ("next to the fuel burner", &noisy_result),
    ] {
        let samples = result.samples();
        section.row(vec![
            label.into(),
            format!("{:.0}", result.per_second()),
            millis(samples.p50()),
            millis(samples.p99()),
            result.failed.to_string(),
        ]);
    }
    let burned_samples = burned.samples();
    section.note(format!(
        "The healthy broker runs {HEALTHY_CONCURRENCY} concurrent lifecycles. The neighbour \
         (another tenant, default limits) gets {DEFAULT_MAX_CONCURRENCY} concurrent provisions, \
         each looping until its fuel runs out: {} of them answered in the run, median {}, \
         {} without an answer.",
        burned.latencies.len(),
        millis(burned_samples.p50()),
        burned.failed
    ));
    report.section(section);
    let measured = ratio(
        noisy_result.samples().p99().as_secs_f64(),
        alone.samples().p99().as_secs_f64(),
    );
    report.target(
        "noisy neighbour: healthy p99 with / without the fuel burner",
        format!(
            "{} vs {} = {measured:.2}×",
            millis(noisy_result.samples().p99()),
            millis(alone.samples().p99())
        ),
        "≤ 2×",
        measured <= 2.0 && noisy_result.failed == 0,
    );
    bench.server.block_on(server.stop())?;
    Ok(())
}
