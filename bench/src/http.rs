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

    let lifecycle = |osb: &Osb| {
        let osb = osb.clone();
        let (service, plan) = (service.clone(), plan.clone());
        move |_, _| {
            let osb = osb.clone();
            let (service, plan) = (service.clone(), plan.clone());
            async move { osb.lifecycle(&service, &plan).await }
        }
    };
    let catalog_job = |osb: &Osb| {
        let osb = osb.clone();
        move |_, _| {
            let osb = osb.clone();
            async move {
                osb.expect(Method::GET, "/v2/catalog", None, StatusCode::OK)
                    .await
            }
        }
    };
    let concurrency = bench.concurrency;
    let (ours, theirs) = bench.interleaved(
        || bench.load(concurrency, lifecycle(&brokerbox)),
        || bench.load(concurrency, lifecycle(&peer)),
    );
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
            "{:.0} vs {:.0} /s = {measured:.2}×",
            ours.per_second(),
            theirs.per_second()
        ),
        "≥ 0.8×",
        measured >= 0.8,
    );

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
    bench.server.block_on(server.stop())?;
    Ok(())
}

/// Adds a table comparing `ours` with the baseline `theirs`.
fn add(
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
