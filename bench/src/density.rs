//! Density (measurement 6): real `brokerbox serve` processes hosting many brokers, started from a
//! warm artifact cache: start-up time (spawn → the last broker answers) and resident memory per
//! extra broker, for brokers sharing one component and for distinct components.

use crate::report::{rss_kib, Report, Section};
use crate::site::{file_broker_manifest, guest, variant, Osb, Site};
use crate::stats::ratio;
use crate::Bench;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A runtime process serving a site.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one start measured.
struct Started {
    startup: Duration,
    rss_kib: u64,
    pss_kib: u64,
}

/// Starts `brokerbox serve` on `site` and waits until broker `last` answers its catalog.
fn start(bench: &Bench, site: &Site, last: &str) -> anyhow::Result<(Process, Started)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let begin = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .arg("runtime")
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(site.data())
        .arg("--brokers-dir")
        .arg(site.brokers())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(site.path().join("runtime.log"))?)
        .spawn()?;
    let mut process = Process { child };
    let osb = Osb::new(
        crate::load::client(),
        format!("127.0.0.1:{port}").parse()?,
        last,
    );
    bench.client.block_on(async {
        loop {
            if osb.catalog().await.is_ok() {
                return anyhow::Ok(());
            }
            if let Some(status) = process.child.try_wait()? {
                let log = std::fs::read_to_string(site.path().join("runtime.log"))?;
                anyhow::bail!("the runtime exited with {status}: {log}");
            }
            anyhow::ensure!(
                begin.elapsed() < Duration::from_secs(300),
                "the runtime did not start"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })?;
    let startup = begin.elapsed();
    // Let start-up work (artifact writes, allocator) settle before reading memory.
    std::thread::sleep(Duration::from_millis(300));
    let rss_kib = rss_kib(process.child.id()).unwrap_or(0);
    let pss_kib = crate::report::pss_kib(process.child.id()).unwrap_or(0);
    Ok((
        process,
        Started {
            startup,
            rss_kib,
            pss_kib,
        },
    ))
}

/// PSS of `process` once it stops falling: freed memory (a large component's bytes read at
/// load, compile scratch) goes back to the kernel some seconds after start-up (about 15 s
/// here), so it watches for at least 30 s and until 10 s pass without change.
fn settled_pss_kib(process: &Process) -> u64 {
    let pid = process.child.id();
    let mut last = crate::report::pss_kib(pid).unwrap_or(0);
    let mut steady = 0;
    for second in 1..=90 {
        std::thread::sleep(Duration::from_secs(1));
        let now = crate::report::pss_kib(pid).unwrap_or(0);
        steady = if now.abs_diff(last) * 200 <= last {
            steady + 1
        } else {
            0
        };
        last = now;
        if second >= 30 && steady >= 10 {
            break;
        }
    }
    last
}

/// [`measure`], with the PSS once settled.
fn measure_settled(bench: &Bench, site: &Site, last: &str) -> anyhow::Result<(Started, u64)> {
    drop(start(bench, site, last)?);
    let (process, started) = start(bench, site, last)?;
    let settled = settled_pss_kib(&process);
    Ok((started, settled))
}

/// Starts a site twice (the first start fills the artifact cache) and measures the second.
fn measure(bench: &Bench, site: &Site, last: &str) -> anyhow::Result<Started> {
    drop(start(bench, site, last)?);
    let (_process, started) = start(bench, site, last)?;
    Ok(started)
}

/// A site of `count` file brokers `b0000`...; `distinct` gives each its own component.
fn site_of(count: usize, distinct: bool) -> anyhow::Result<(Site, String)> {
    site_with(brokerbox_tests::guests::FILE_BROKER, count, distinct)
}

/// A site of `count` brokers `b0000`... of the file-broker component at `component` (Rust or
/// Python); `distinct` gives each its own copy of the component.
fn site_with(component: &str, count: usize, distinct: bool) -> anyhow::Result<(Site, String)> {
    let site = Site::new()?;
    let wasm = guest(component)?;
    let shared = site.path().join("shared.wasm");
    std::fs::write(&shared, &wasm)?;
    for i in 0..count {
        let name = format!("b{i:04}");
        let path = site.brokers().join(format!("{name}.wasm"));
        if distinct {
            std::fs::write(&path, variant(&wasm, &name))?;
        } else {
            std::fs::hard_link(&shared, &path)?;
        }
        std::fs::write(
            site.brokers().join(format!("{name}.toml")),
            // Each registration gets its own service and plan ids.
            format!(
                "{}[env]\nSERVICE_ID = \"svc-{name}\"\n",
                file_broker_manifest(&name)
            ),
        )?;
    }
    Ok((site, format!("b{:04}", count - 1)))
}

/// Resident memory of a runtime process per Python broker (part of measurement 8): one Rust
/// file broker, one Python file broker, and eleven Python brokers sharing one component.
pub fn python_memory(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let python = brokerbox_tests::guests::PYTHON_FILE_BROKER;
    let extra = bench.scaled(10, 2);
    let (site, last) = site_of(1, false)?;
    let (rust, rust_settled) = measure_settled(bench, &site, &last)?;
    let (site, last) = site_with(python, 1, false)?;
    let (one, one_settled) = measure_settled(bench, &site, &last)?;
    let (site, last) = site_with(python, 1 + extra, false)?;
    let (many, many_settled) = measure_settled(bench, &site, &last)?;
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let mut section = Section::new(
        "8d. Memory of Python brokers: one runtime process, warm artifact cache",
        &[
            "brokers",
            "start-up",
            "PSS at start-up",
            "PSS settled",
            "settled difference",
        ],
    );
    section.row(vec![
        "1 Rust file broker".into(),
        crate::stats::millis(rust.startup),
        mib(rust.pss_kib),
        mib(rust_settled),
        "-".into(),
    ]);
    section.row(vec![
        "1 Python file broker".into(),
        crate::stats::millis(one.startup),
        mib(one.pss_kib),
        mib(one_settled),
        format!(
            "{} for the Python component",
            mib(one_settled.saturating_sub(rust_settled))
        ),
    ]);
    section.row(vec![
        format!("{} Python brokers sharing the component", 1 + extra),
        crate::stats::millis(many.startup),
        mib(many.pss_kib),
        mib(many_settled),
        format!(
            "{:.0} KiB per extra broker",
            ratio(
                many_settled.saturating_sub(one_settled) as f64,
                extra as f64
            )
        ),
    ]);
    section.note(
        "PSS (resident memory, shared pages divided among their mappings) 300 ms after the last \
         broker answered, and once settled (after at least 30 s, no change over 10 s): memory \
         freed after loading goes back to the kernel some seconds later. Each broker's catalog is read at load, so each ran one call.",
    );
    report.section(section);
    Ok(())
}

/// Runs the measurements.
pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let shared_count = bench.scaled(1000, 20);
    let distinct_count = bench.scaled(100, 5);
    let (one, last) = site_of(1, false)?;
    let base = measure(bench, &one, &last)?;
    let (shared_site, last) = site_of(shared_count, false)?;
    let shared = measure(bench, &shared_site, &last)?;
    drop(shared_site);
    let (distinct_site, last) = site_of(distinct_count, true)?;
    let distinct = measure(bench, &distinct_site, &last)?;
    drop(distinct_site);

    let per_extra = |started: &Started, count: usize| {
        ratio(
            started.rss_kib.saturating_sub(base.rss_kib) as f64,
            (count - 1) as f64,
        )
    };
    let mut section = Section::new(
        "6. Density: one runtime process, started from a warm artifact cache",
        &["brokers", "start-up", "resident memory", "per extra broker"],
    );
    section.row(vec![
        "1 file broker".into(),
        crate::stats::millis(base.startup),
        format!("{:.1} MiB", base.rss_kib as f64 / 1024.0),
        "-".into(),
    ]);
    for (label, started, count) in [
        (
            format!("{shared_count} brokers sharing one component"),
            &shared,
            shared_count,
        ),
        (
            format!("{distinct_count} brokers, each its own component"),
            &distinct,
            distinct_count,
        ),
    ] {
        section.row(vec![
            label,
            crate::stats::millis(started.startup),
            format!("{:.1} MiB", started.rss_kib as f64 / 1024.0),
            format!("{:.1} KiB", per_extra(started, count)),
        ]);
    }
    section.note(
        "Start-up: from spawning `brokerbox serve` until the last broker answers its catalog \
         (engine, state store, every broker loaded and checked). Memory: the process's VmRSS \
         once started; per extra broker = (RSS − RSS with one broker) / (brokers − 1).",
    );
    report.section(section);
    report.target(
        &format!("start-up with {shared_count} brokers (warm cache)"),
        crate::stats::millis(shared.startup),
        "≤ 2 s",
        shared.startup <= Duration::from_secs(2),
    );
    let per = per_extra(&shared, shared_count);
    report.target(
        "resident memory per extra broker sharing a component",
        format!("{per:.1} KiB"),
        "≤ 64 KiB",
        per <= 64.0,
    );
    Ok(())
}
