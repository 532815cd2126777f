//! The per-call floor (measurement 1): a fresh `Store`, instantiation, one `provision` of the file
//! broker and the drop, in process, through the runtime's own call path (fuel, epochs, limits, the
//! files grant), for each way wasmtime can allocate instances. Variants run in interleaved rounds
//! so drift on a shared machine hits them all alike.

use crate::report::{Report, Section};
use crate::stats::{micros, ratio, Samples};
use crate::Bench;
use brokerbox::sandbox::bindings::types::ProvisionRequest;
use brokerbox::sandbox::cache::ComponentCache;
use brokerbox::sandbox::limits::Limits;
use brokerbox::sandbox::{
    new_engine_with, Allocation, CallInfo, EpochTicker, Grants, Guest, Sandbox,
};
use std::time::{Duration, Instant};

/// One engine setting under test.
struct Variant {
    label: &'static str,
    allocation: Allocation,
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            label: "on-demand allocator",
            allocation: Allocation::OnDemand,
        },
        Variant {
            label: "pooling, defaults",
            allocation: Allocation::Pooling,
        },
        Variant {
            label: "pooling, keep 64 KiB resident",
            allocation: Allocation::PoolingResident {
                keep_resident: 64 * 1024,
                pagemap_scan: false,
            },
        },
        Variant {
            label: "pooling, keep 1 MiB resident",
            allocation: Allocation::PoolingResident {
                keep_resident: 1024 * 1024,
                pagemap_scan: false,
            },
        },
        Variant {
            label: "pooling, pagemap_scan, keep 16 MiB resident",
            allocation: Allocation::PoolingResident {
                keep_resident: 16 * 1024 * 1024,
                pagemap_scan: true,
            },
        },
        Variant {
            label: "pooling, pagemap_scan, keep 1 MiB resident",
            allocation: Allocation::PoolingResident {
                keep_resident: 1024 * 1024,
                pagemap_scan: true,
            },
        },
    ]
}

fn request() -> ProvisionRequest {
    crate::site::provision_request(
        "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01",
        "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101",
        "floor",
    )
}

fn native_provision(dir: &std::path::Path) -> std::io::Result<()> {
    let plan = serde_json::json!({
        "id": "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101", "name": "small", "description": "A small file",
    });
    std::fs::write(dir.join("floor"), plan.to_string())
}

/// Measures the per-call floor and adds its section and target to `report`.
pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let wasm = crate::site::guest(brokerbox_tests::guests::FILE_BROKER)?;
    // The instance files go to tmpfs when there is one: the floor is the sandbox's cost, not
    // the disk's (ext4 flushes a truncated-and-rewritten file on close, ~100 µs here).
    let shm = std::path::Path::new("/dev/shm");
    let files = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let on_tmpfs = shm.is_dir();
    let variants = variants();
    let calls_per_round = bench.scaled(400, 20);
    let rounds = bench.scaled(8, 2);
    let mut guests = Vec::new();
    let mut tickers = Vec::new();
    for variant in &variants {
        let engine = new_engine_with(variant.allocation)?;
        tickers.push(EpochTicker::start(engine.clone()));
        let sandbox = Sandbox::with_engine(engine, ComponentCache::in_memory());
        // As a manifest's `files = true` grants it: the directory with its quota (whose file
        // calls write on the calling thread).
        let quota = brokerbox::sandbox::files_quota::FilesQuota::new(
            files.path().to_path_buf(),
            brokerbox::sandbox::files_quota::DEFAULT_QUOTA_BYTES,
            brokerbox::sandbox::files_quota::DEFAULT_QUOTA_COUNT,
        );
        let grants = Grants {
            files_dir: Some(files.path().to_path_buf()),
            files_quota: Some(std::sync::Arc::new(quota)),
            ..Grants::default()
        };
        let guest = Guest::load(
            &sandbox,
            "file-broker",
            "file-broker",
            &wasm,
            Limits::default(),
            grants,
        )?;
        guests.push(guest);
    }
    let info = CallInfo::default();
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    let mut catalogs: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    let mut native = Vec::new();
    bench.server.block_on(async {
        // Warm-up: fill the pools' slots and the page cache.
        for guest in &guests {
            for _ in 0..50 {
                guest.provision(&info, request()).await?;
            }
        }
        for _ in 0..rounds {
            for ((guest, samples), catalog) in guests
                .iter()
                .zip(latencies.iter_mut())
                .zip(catalogs.iter_mut())
            {
                for _ in 0..calls_per_round {
                    let start = Instant::now();
                    guest.provision(&info, request()).await?;
                    samples.push(start.elapsed());
                }
                // The same with a call that does no I/O: the sandbox alone.
                for _ in 0..calls_per_round {
                    let start = Instant::now();
                    guest.catalog(&info).await?;
                    catalog.push(start.elapsed());
                }
            }
            for _ in 0..calls_per_round {
                let start = Instant::now();
                native_provision(files.path())?;
                native.push(start.elapsed());
            }
        }
        anyhow::Ok(())
    })?;
    drop(tickers);
    let samples: Vec<Samples> = latencies.into_iter().map(Samples::new).collect();
    let catalogs: Vec<Samples> = catalogs.into_iter().map(Samples::new).collect();
    let native = Samples::new(native);
    let best = samples
        .iter()
        .map(|s| s.p50().as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let production = variants
        .iter()
        .position(|v| v.allocation == Allocation::production())
        .expect("production is among the variants");
    let mut section = Section::new(
        "1. Per-call floor: fresh Store + instantiate + provision + drop (file broker, in process)",
        &[
            "engine setting",
            "provision median",
            "provision p99",
            "median / best",
            "catalog call median (no I/O)",
            "catalog p99",
        ],
    );
    for ((variant, s), c) in variants.iter().zip(&samples).zip(&catalogs) {
        let label = if variant.allocation == Allocation::production() {
            format!("**{}** (production)", variant.label)
        } else {
            variant.label.to_string()
        };
        section.row(vec![
            label,
            micros(s.p50()),
            micros(s.p99()),
            format!("{:.2}×", ratio(s.p50().as_secs_f64(), best)),
            micros(c.p50()),
            micros(c.p99()),
        ]);
    }
    section.row(vec![
        "baseline: the same provision compiled natively (no sandbox)".into(),
        micros(native.p50()),
        micros(native.p99()),
        format!("{:.2}×", ratio(native.p50().as_secs_f64(), best)),
        "-".into(),
        "-".into(),
    ]);
    section.note(format!(
        "{} calls per setting in {rounds} interleaved rounds; every setting has fuel and epoch \
         interruption on (an epoch ticker thread running) and goes through `Guest::provision`, \
         the path every OSB request takes. The provision writes its instance file {}.",
        rounds * calls_per_round,
        if on_tmpfs {
            "to tmpfs (/dev/shm)"
        } else {
            "to the temp dir"
        }
    ));
    report.section(section);
    let measured = ratio(samples[production].p50().as_secs_f64(), best);
    report.target(
        "per-call floor: production setting / best setting (median)",
        format!(
            "{} vs {} = {measured:.2}×",
            micros(samples[production].p50()),
            micros(Duration::from_secs_f64(best))
        ),
        "≤ 1.2×",
        measured <= 1.2,
    );
    Ok(())
}
