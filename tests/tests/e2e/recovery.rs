//! Durability of operations: a SIGKILL in the middle of operations, a SIGTERM that lets
//! running calls finish, two replicas sharing PostgreSQL, and many conflicting requests at once.

use crate::process::RuntimeProcess;
use brokerbox_tests::{guests, manifest, postgres, repo_root, send_osb, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const SLOW_SERVICE: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e01";
const SLOW_FLEXIBLE: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e12";
const FILE_SERVICE: &str = "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01";
const FILE_SMALL: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";
const FILE_LARGE: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b102";

/// A brokers dir with slow-broker (a short sync window, so slow calls answer 202 quickly) and
/// file-broker.
fn brokers_dir(root: &Path) -> std::path::PathBuf {
    brokers_dir_with(root, "")
}

/// [`brokers_dir`] with more `[operations]` settings for slow-broker.
fn brokers_dir_with(root: &Path, operations: &str) -> std::path::PathBuf {
    let dir = root.join("brokers");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(guests::SLOW_BROKER, dir.join("slow-broker.wasm")).unwrap();
    let settings = format!("[operations]\nsync_window_ms = 200\n{operations}");
    std::fs::write(
        dir.join("slow-broker.toml"),
        manifest("slow-broker", &settings),
    )
    .unwrap();
    std::fs::copy(guests::FILE_BROKER, dir.join("file-broker.wasm")).unwrap();
    let file_manifest =
        std::fs::read_to_string(repo_root().join("examples/file-broker/file-broker.toml")).unwrap();
    std::fs::write(dir.join("file-broker.toml"), file_manifest).unwrap();
    dir
}

use crate::process::state_url;

fn slow_body(parameters: Value) -> Value {
    json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_FLEXIBLE, "parameters": parameters })
}

/// Polls `last_operation` of `instance` on `base` until it is not in progress.
async fn final_state(base: &str, instance: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let url = format!("{base}/v2/service_instances/{instance}/last_operation");
        let (status, body) = send_osb(Method::GET, url, "slow-broker", None).await;
        if status == StatusCode::OK && body["state"] != "in progress" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("instance {instance} stayed in progress");
}

#[tokio::test]
async fn sigkill_in_the_middle_of_operations_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = brokers_dir(dir.path());
    let data = dir.path().join("data");
    let mut process =
        RuntimeProcess::start(&data, &brokers, state_url().await, &["--lease-ms", "2000"]).await;
    let slow = process.url("slow-broker");
    let file = process.url("file-broker");

    // Finished records that must survive.
    let (status, _) = send_osb(
        Method::PUT,
        format!("{file}/v2/service_instances/f-1"),
        "file-broker",
        Some(json!({ "service_id": FILE_SERVICE, "plan_id": FILE_SMALL })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, bound) = send_osb(
        Method::PUT,
        format!("{file}/v2/service_instances/f-1/service_bindings/b-1"),
        "file-broker",
        Some(json!({ "service_id": FILE_SERVICE, "plan_id": FILE_SMALL })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Host-run calls still running when the process dies...
    for i in 0..3 {
        let url = format!("{slow}/v2/service_instances/sleep-{i}?accepts_incomplete=true");
        let (status, _) = send_osb(
            Method::PUT,
            url,
            "slow-broker",
            Some(slow_body(json!({ "sleep_ms": 2500 }))),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    // ...and guest-driven long operations being polled.
    for i in 0..2 {
        let url = format!("{slow}/v2/service_instances/poll-{i}?accepts_incomplete=true");
        let (status, _) = send_osb(
            Method::PUT,
            url,
            "slow-broker",
            Some(slow_body(json!({ "polls": 4 }))),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    process.kill().await;
    process.restart().await;
    let slow = process.url("slow-broker");
    let file = process.url("file-broker");

    for i in 0..3 {
        let state = final_state(&slow, &format!("sleep-{i}")).await;
        assert_eq!(state["state"], "succeeded", "sleep-{i}: {state}");
        let (status, instance) = send_osb(
            Method::GET,
            format!("{slow}/v2/service_instances/sleep-{i}"),
            "slow-broker",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let dashboard = instance["dashboard_url"].as_str().unwrap();
        assert!(
            dashboard.ends_with("attempt=2"),
            "retried after the crash: {dashboard}"
        );
    }
    for i in 0..2 {
        let state = final_state(&slow, &format!("poll-{i}")).await;
        assert_eq!(state["state"], "succeeded", "poll-{i}: {state}");
    }
    let (status, _) = send_osb(
        Method::GET,
        format!("{file}/v2/service_instances/f-1"),
        "file-broker",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, binding) = send_osb(
        Method::GET,
        format!("{file}/v2/service_instances/f-1/service_bindings/b-1"),
        "file-broker",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(binding["credentials"], bound["credentials"]);
}

#[tokio::test]
async fn sigterm_lets_running_guest_calls_finish() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = brokers_dir(dir.path());
    let data = dir.path().join("data");
    let mut process = RuntimeProcess::start(&data, &brokers, state_url().await, &[]).await;
    let slow = process.url("slow-broker");
    let url = format!("{slow}/v2/service_instances/term-1?accepts_incomplete=true");
    let (status, _) = send_osb(
        Method::PUT,
        url,
        "slow-broker",
        Some(slow_body(json!({ "sleep_ms": 1500 }))),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let took = process.terminate(Duration::from_secs(15)).await;
    assert!(
        took >= Duration::from_millis(900),
        "it waited for the running call ({took:?})"
    );
    process.restart().await;
    let slow = process.url("slow-broker");
    let state = final_state(&slow, "term-1").await;
    assert_eq!(state["state"], "succeeded");
    let (_, instance) = send_osb(
        Method::GET,
        format!("{slow}/v2/service_instances/term-1"),
        "slow-broker",
        None,
    )
    .await;
    assert!(
        instance["dashboard_url"]
            .as_str()
            .unwrap()
            .ends_with("attempt=1"),
        "finished, not retried: {instance}"
    );
}

#[tokio::test]
async fn replicas_on_postgres_share_and_take_over_operations() {
    let Some(server) = postgres::server() else {
        eprintln!("skipped: set {} to run replica tests", postgres::SERVER_ENV);
        return;
    };
    let database = postgres::fresh_database(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let brokers = brokers_dir(dir.path());
    let lease = ["--lease-ms", "1000"];
    let mut a = RuntimeProcess::start(
        &dir.path().join("a"),
        &brokers,
        Some(database.clone()),
        &lease,
    )
    .await;
    // Replicas share the master key that opens the database's data keys.
    let keyring = dir.path().join("a/keyring.toml");
    let keyring = keyring.to_str().unwrap();
    let with_keyring = ["--lease-ms", "1000", "--keyring", keyring];
    let b = RuntimeProcess::start(
        &dir.path().join("b"),
        &brokers,
        Some(database),
        &with_keyring,
    )
    .await;

    // Accepted by one replica, polled on the other.
    let url = format!(
        "{}/v2/service_instances/shared-1?accepts_incomplete=true",
        a.url("slow-broker")
    );
    let (status, _) = send_osb(
        Method::PUT,
        url,
        "slow-broker",
        Some(slow_body(json!({ "polls": 3 }))),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        final_state(&b.url("slow-broker"), "shared-1").await["state"],
        "succeeded"
    );

    // A replica dies mid-call: the other takes the operation over once the lease expires.
    let url = format!(
        "{}/v2/service_instances/shared-2?accepts_incomplete=true",
        a.url("slow-broker")
    );
    let (status, _) = send_osb(
        Method::PUT,
        url,
        "slow-broker",
        Some(slow_body(json!({ "sleep_ms": 2000 }))),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill().await;
    assert_eq!(
        final_state(&b.url("slow-broker"), "shared-2").await["state"],
        "succeeded"
    );
    let (_, instance) = send_osb(
        Method::GET,
        format!("{}/v2/service_instances/shared-2", b.url("slow-broker")),
        "slow-broker",
        None,
    )
    .await;
    assert!(
        instance["dashboard_url"]
            .as_str()
            .unwrap()
            .ends_with("attempt=2"),
        "{instance}"
    );
}

#[tokio::test]
async fn a_hundred_conflicting_requests_run_one_operation() {
    let rt = TestRuntime::examples().await.unwrap();
    let instance = "/v2/service_instances/race-1";
    let requests = (0..100).map(|i| {
        let plan = if i % 2 == 0 { FILE_SMALL } else { FILE_LARGE };
        let body = json!({ "service_id": FILE_SERVICE, "plan_id": plan });
        let rt = &rt;
        async move {
            (
                plan,
                rt.osb(Method::PUT, "file-broker", instance, Some(body))
                    .await,
            )
        }
    });
    let answers = futures::future::join_all(requests).await;
    let created: Vec<_> = answers
        .iter()
        .filter(|(_, a)| a.status == StatusCode::CREATED)
        .collect();
    assert_eq!(created.len(), 1, "exactly one provision ran");
    let winner = created[0].0;
    for (plan, answer) in &answers {
        let allowed: &[StatusCode] = if *plan == winner {
            &[
                StatusCode::CREATED,
                StatusCode::OK,
                StatusCode::UNPROCESSABLE_ENTITY,
            ]
        } else {
            &[StatusCode::CONFLICT]
        };
        assert!(
            allowed.contains(&answer.status),
            "{plan}: {:?} {:?}",
            answer.status,
            answer.body
        );
        if answer.status == StatusCode::UNPROCESSABLE_ENTITY {
            assert_eq!(answer.body["error"], "ConcurrencyError");
        }
    }
    let fetched = rt.osb(Method::GET, "file-broker", instance, None).await;
    assert_eq!(fetched.body["plan_id"], winner);
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(rt.files_dir("file-broker").join("race-1")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        file["id"], winner,
        "the guest ran once, with the winning plan"
    );

    // A hundred concurrent updates: each one applied or refused as concurrent; state consistent.
    let updates = (0..100).map(|i| {
        let plan = if i % 2 == 0 { FILE_SMALL } else { FILE_LARGE };
        let body = json!({ "service_id": FILE_SERVICE, "plan_id": plan });
        let rt = &rt;
        async move {
            rt.osb(Method::PATCH, "file-broker", instance, Some(body))
                .await
        }
    });
    let answers = futures::future::join_all(updates).await;
    assert!(answers.iter().any(|a| a.status == StatusCode::OK));
    for answer in &answers {
        let concurrent = answer.status == StatusCode::UNPROCESSABLE_ENTITY
            && answer.body["error"] == "ConcurrencyError";
        assert!(
            answer.status == StatusCode::OK || concurrent,
            "{:?} {:?}",
            answer.status,
            answer.body
        );
    }
    let fetched = rt.osb(Method::GET, "file-broker", instance, None).await;
    assert_eq!(fetched.status, StatusCode::OK);
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(rt.files_dir("file-broker").join("race-1")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        file["id"], fetched.body["plan_id"],
        "stored plan and broker state agree"
    );
}

#[tokio::test]
async fn interrupted_operations_are_retried_up_to_max_attempts_then_failed() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = brokers_dir_with(dir.path(), "max_attempts = 2\n");
    let data = dir.path().join("data");
    let mut process = RuntimeProcess::start(&data, &brokers, state_url().await, &[]).await;
    let url = format!(
        "{}/v2/service_instances/twice?accepts_incomplete=true",
        process.url("slow-broker")
    );
    let (status, _) = send_osb(
        Method::PUT,
        url,
        "slow-broker",
        Some(slow_body(json!({ "sleep_ms": 3000 }))),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    process.restart().await; // SIGKILL during attempt 1; attempt 2 starts at once
    tokio::time::sleep(Duration::from_millis(500)).await;
    process.restart().await; // SIGKILL during attempt 2: no attempt left
    let state = final_state(&process.url("slow-broker"), "twice").await;
    assert_eq!(state["state"], "failed");
    assert!(
        state["description"]
            .as_str()
            .unwrap()
            .contains("interrupted 2 times"),
        "{state}"
    );
    // A failed provision leaves an instance the platform can delete (orphan mitigation).
    let delete = format!(
        "{}/v2/service_instances/twice?service_id={SLOW_SERVICE}&plan_id={SLOW_FLEXIBLE}",
        process.url("slow-broker")
    );
    let (status, _) = send_osb(Method::DELETE, delete, "slow-broker", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn sync_window_and_sync_deadline() {
    let settings = "[operations]\nsync_window_ms = 400\nsync_deadline_ms = 400\n";
    let rt = TestRuntime::start(&[(
        "slow-broker",
        guests::SLOW_BROKER,
        &manifest("slow-broker", settings),
    )])
    .await
    .unwrap();
    // An asynchronous request whose call ends within the sync window gets the final answer.
    let quick = rt
        .osb(
            Method::PUT,
            "slow-broker",
            "/v2/service_instances/quick?accepts_incomplete=true",
            Some(slow_body(json!({ "sleep_ms": 50 }))),
        )
        .await;
    assert_eq!(quick.status, StatusCode::CREATED, "{:?}", quick.body);
    // One that takes longer is answered 202 and finishes in the background.
    let long = rt
        .osb(
            Method::PUT,
            "slow-broker",
            "/v2/service_instances/long?accepts_incomplete=true",
            Some(slow_body(json!({ "sleep_ms": 1500 }))),
        )
        .await;
    assert_eq!(long.status, StatusCode::ACCEPTED);
    let operation = long.body["operation"].as_str().unwrap();
    let done = rt
        .poll_until_done("slow-broker", "/v2/service_instances/long", operation)
        .await;
    assert_eq!(done.body["state"], "succeeded");
    // A synchronous request is cut at the sync deadline, answered with an OSB error, and the
    // stored operation says so.
    let started = Instant::now();
    let cut = rt
        .osb(
            Method::PUT,
            "slow-broker",
            "/v2/service_instances/cut",
            Some(slow_body(json!({ "sleep_ms": 3000 }))),
        )
        .await;
    assert_eq!(cut.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        cut.body["description"].as_str().unwrap().contains("400 ms"),
        "{:?}",
        cut.body
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "cut at the deadline"
    );
    let state = rt
        .osb(
            Method::GET,
            "slow-broker",
            "/v2/service_instances/cut/last_operation",
            None,
        )
        .await;
    assert_eq!(state.body["state"], "failed");
}
