//! Hot reload: versions swap atomically under load, broken or incompatible versions are
//! refused while the old one keeps serving, and `--watch` picks up changed files.

use brokerbox::reload::Reloaded;
use brokerbox_tests::{guests, manifest, repo_root, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn trap_manifest(version: usize, extra: &str) -> String {
    manifest("trap", &format!("[env]\nVERSION = \"{version}\"\n{extra}"))
}

async fn runtime(watch: bool) -> TestRuntime {
    let file =
        std::fs::read_to_string(repo_root().join("examples/file-broker/file-broker.toml")).unwrap();
    TestRuntime::start_with(
        &[
            ("trap", guests::TRAP_BROKER, &trap_manifest(0, "")),
            ("file-broker", guests::FILE_BROKER, &file),
        ],
        move |config| config.watch = watch,
    )
    .await
    .unwrap()
}

/// The version a response shows: the catalog's description or a provision's dashboard URL.
fn version_of(text: &str) -> usize {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no version in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_fail_no_request() {
    let rt = Arc::new(runtime(false).await);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for broker in ["trap", "file-broker"] {
        let (rt, stop, served) = (rt.clone(), stop.clone(), served.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut last_version = 0;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let catalog = rt.osb(Method::GET, broker, "/v2/catalog", None).await;
                if catalog.status != StatusCode::OK {
                    failures.push(format!("catalog {}", catalog.status));
                }
                let body = if broker == "trap" {
                    json!({ "service_id": "trap-service", "plan_id": "ok-plan" })
                } else {
                    json!({ "service_id": "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01", "plan_id": "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101" })
                };
                let created = rt.osb(Method::PUT, broker, &format!("/v2/service_instances/{broker}-{i}"), Some(body)).await;
                if created.status != StatusCode::CREATED {
                    failures.push(format!("provision {} {}", created.status, created.body));
                }
                if broker == "trap" {
                    // Each response comes from one complete version, and versions only move on.
                    let catalog_version = version_of(catalog.body["services"][0]["description"].as_str().unwrap());
                    let provision_version = version_of(created.body["dashboard_url"].as_str().unwrap());
                    assert!(catalog_version >= last_version && provision_version >= catalog_version);
                    last_version = provision_version;
                }
                served.fetch_add(2, Ordering::Relaxed);
            }
            failures
        }));
    }
    let dir = rt.dir.path().join("brokers");
    for version in 1..=50 {
        std::fs::write(dir.join("trap.toml"), trap_manifest(version, "")).unwrap();
        let reloaded = rt.server().reloader.reload("trap", false).await.unwrap();
        assert!(matches!(reloaded, Reloaded::Updated(_)), "{reloaded:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let failures = client.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    assert!(
        served.load(Ordering::Relaxed) > 100,
        "the clients kept sending"
    );
    let last = rt.osb(Method::GET, "trap", "/v2/catalog", None).await;
    assert_eq!(
        version_of(last.body["services"][0]["description"].as_str().unwrap()),
        50
    );
}

#[tokio::test]
async fn broken_or_incompatible_versions_are_refused_and_the_old_one_keeps_serving() {
    let rt = runtime(false).await;
    let dir = rt.dir.path().join("brokers");
    let reloader = &rt.server().reloader;

    // Not a component: refused, version 0 keeps serving, the failure is visible.
    std::fs::write(dir.join("trap.wasm"), b"not wasm").unwrap();
    assert!(reloader.reload("trap", false).await.is_err());
    assert!(reloader.failures()["trap"].contains("not a valid WebAssembly component"));
    let catalog = rt.osb(Method::GET, "trap", "/v2/catalog", None).await;
    assert_eq!(
        version_of(catalog.body["services"][0]["description"].as_str().unwrap()),
        0
    );
    std::fs::copy(guests::TRAP_BROKER, dir.join("trap.wasm")).unwrap();

    // A version adding a plan, used by an instance, then one removing it: refused unless forced.
    std::fs::write(
        dir.join("trap.toml"),
        trap_manifest(1, "EXTRA_PLAN = \"yes\"\n"),
    )
    .unwrap();
    assert!(matches!(
        reloader.reload("trap", false).await.unwrap(),
        Reloaded::Updated(_)
    ));
    assert!(reloader.failures().is_empty());
    let extra = json!({ "service_id": "trap-service", "plan_id": "extra-plan" });
    assert_eq!(
        rt.osb(
            Method::PUT,
            "trap",
            "/v2/service_instances/x-1",
            Some(extra)
        )
        .await
        .status,
        StatusCode::CREATED
    );
    std::fs::write(dir.join("trap.toml"), trap_manifest(2, "")).unwrap();
    let refused = reloader.reload("trap", false).await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("removes plan extra-plan"),
        "{refused:#}"
    );
    // An id change is refused too.
    std::fs::write(
        dir.join("trap.toml"),
        trap_manifest(2, "EXTRA_PLAN = \"yes\"\nOK_PLAN_ID = \"new-ok\"\n"),
    )
    .unwrap();
    let refused = reloader.reload("trap", false).await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("changes the id of trap/ok"),
        "{refused:#}"
    );
    let catalog = rt.osb(Method::GET, "trap", "/v2/catalog", None).await;
    assert_eq!(
        version_of(catalog.body["services"][0]["description"].as_str().unwrap()),
        1
    );
    // Forced, it goes through.
    std::fs::write(dir.join("trap.toml"), trap_manifest(3, "")).unwrap();
    assert!(matches!(
        reloader.reload("trap", true).await.unwrap(),
        Reloaded::Updated(_)
    ));
    // The same files again change nothing.
    assert_eq!(
        reloader.reload("trap", false).await.unwrap(),
        Reloaded::Unchanged
    );
}

#[tokio::test]
async fn watch_picks_up_changed_and_new_brokers() {
    let rt = runtime(true).await;
    let dir = rt.dir.path().join("brokers");
    std::fs::write(dir.join("trap.toml"), trap_manifest(7, "")).unwrap();
    std::fs::copy(guests::SLOW_BROKER, dir.join("slow-broker.wasm")).unwrap();
    std::fs::write(dir.join("slow-broker.toml"), manifest("slow-broker", "")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let trap = rt.osb(Method::GET, "trap", "/v2/catalog", None).await;
        let slow = rt
            .osb(Method::GET, "slow-broker", "/v2/catalog", None)
            .await;
        let version = version_of(trap.body["services"][0]["description"].as_str().unwrap());
        if version == 7 && slow.status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher did not reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `--watch` reacts to the file events of a finished write: the new version serves before
/// the poller (which needs two looks 200 ms apart) could have noticed it. On a loaded machine
/// one attempt may be slow, so it gets three.
#[tokio::test]
async fn watch_reloads_on_the_file_event_before_the_next_poll() {
    let rt = runtime(true).await;
    let dir = rt.dir.path().join("brokers");
    // Let the watcher's first looks reconcile what serves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut fastest = Duration::MAX;
    for version in 1..=3 {
        let written = std::time::Instant::now();
        std::fs::write(dir.join("trap.toml"), trap_manifest(version, "")).unwrap();
        loop {
            let trap = rt.osb(Method::GET, "trap", "/v2/catalog", None).await;
            if version_of(trap.body["services"][0]["description"].as_str().unwrap()) == version {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(10),
                "never reloaded"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        fastest = fastest.min(written.elapsed());
        if fastest < brokerbox::watch::POLL_INTERVAL {
            return;
        }
    }
    panic!("every reload took {fastest:?} or more: the file event did not trigger it");
}

#[tokio::test]
async fn a_long_operation_is_finished_by_the_version_that_accepted_it() {
    let slow = |release: u32| manifest("slow-broker", &format!("[env]\nRELEASE = \"{release}\"\n"));
    let rt = TestRuntime::start(&[("slow-broker", guests::SLOW_BROKER, &slow(1))])
        .await
        .unwrap();
    let body = json!({ "service_id": "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e01",
                       "plan_id": "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e11", "parameters": { "polls": 4 } });
    let accepted = rt
        .osb(
            Method::PUT,
            "slow-broker",
            "/v2/service_instances/pinned?accepts_incomplete=true",
            Some(body),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    std::fs::write(rt.dir.path().join("brokers/slow-broker.toml"), slow(2)).unwrap();
    let reloaded = rt
        .server()
        .reloader
        .reload("slow-broker", false)
        .await
        .unwrap();
    assert!(matches!(reloaded, Reloaded::Updated(_)));
    let operation = accepted.body["operation"].as_str().unwrap();
    let done = rt
        .poll_until_done("slow-broker", "/v2/service_instances/pinned", operation)
        .await;
    assert_eq!(done.body["state"], "succeeded");
    let fetched = rt
        .osb(
            Method::GET,
            "slow-broker",
            "/v2/service_instances/pinned",
            None,
        )
        .await;
    assert_eq!(
        fetched.body["dashboard_url"],
        "https://slow.example/pinned?finished-by=1"
    );
}
