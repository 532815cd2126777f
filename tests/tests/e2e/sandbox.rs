//! The hostile-guest suite: each attack runs against a real runtime process next to a healthy
//! broker. Every test checks the exact OSB answer, that it came within the deadline plus a
//! margin, that the neighbour answered a request sent during the attack, and that the
//! runtime's memory came back to its baseline.

use crate::process::RuntimeProcess;
use brokerbox_tests::{guests, manifest, repo_root, send_osb, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Memory the runtime may keep above its baseline after an attack (allocator caches, pooled
/// instance slots kept resident).
const RSS_MARGIN_KIB: u64 = 48 * 1024;

/// What an attack and the request sent during it got.
struct Attack {
    status: StatusCode,
    body: Value,
    took: Duration,
    neighbour: StatusCode,
    neighbour_took: Duration,
    rss_before_kib: u64,
    rss_after_kib: u64,
}

fn hostile(plan: &str) -> Value {
    json!({ "service_id": "hostile-service", "plan_id": format!("{plan}-plan") })
}

/// Runs attack `plan` of hostile-broker (manifest extras `extra`) next to file-broker.
async fn attack(plan: &str, extra: &str) -> Attack {
    let dir = tempfile::tempdir().unwrap();
    let brokers = dir.path().join("brokers");
    std::fs::create_dir_all(&brokers).unwrap();
    std::fs::copy(guests::HOSTILE_BROKER, brokers.join("hostile.wasm")).unwrap();
    std::fs::write(brokers.join("hostile.toml"), manifest("hostile", extra)).unwrap();
    std::fs::copy(guests::FILE_BROKER, brokers.join("file-broker.wasm")).unwrap();
    let file_manifest = repo_root().join("examples/file-broker/file-broker.toml");
    std::fs::copy(file_manifest, brokers.join("file-broker.toml")).unwrap();
    let mut process = RuntimeProcess::start(&dir.path().join("data"), &brokers, None, &[]).await;
    let hostile_url = process.url("hostile");
    let file_url = process.url("file-broker");

    // Warm up both brokers, then take the baseline.
    let (status, _) = send_osb(
        Method::PUT,
        format!("{hostile_url}/v2/service_instances/warm"),
        "hostile",
        Some(hostile("ok")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let file_body = |plan: &str| json!({ "service_id": "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01", "plan_id": plan });
    let small = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";
    let (status, _) = send_osb(
        Method::PUT,
        format!("{file_url}/v2/service_instances/warm"),
        "file-broker",
        Some(file_body(small)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before_kib = process.rss_kib();

    let started = Instant::now();
    let url = format!("{hostile_url}/v2/service_instances/attack");
    let attack = tokio::spawn(send_osb(Method::PUT, url, "hostile", Some(hostile(plan))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let neighbour_started = Instant::now();
    let (neighbour, _) = send_osb(
        Method::PUT,
        format!("{file_url}/v2/service_instances/during"),
        "file-broker",
        Some(file_body(small)),
    )
    .await;
    let neighbour_took = neighbour_started.elapsed();
    let (status, body) = attack.await.unwrap();
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after_kib = process.rss_kib();
    process.kill().await;
    Attack {
        status,
        body,
        took,
        neighbour,
        neighbour_took,
        rss_before_kib,
        rss_after_kib,
    }
}

/// The checks every attack shares.
fn assert_contained(attack: &Attack, status: StatusCode, description: &str, deadline: Duration) {
    assert_eq!(attack.status, status, "{}", attack.body);
    let text = attack.body["description"].as_str().unwrap_or_default();
    assert!(
        text.contains(description),
        "description {text:?} lacks {description:?}"
    );
    assert!(
        attack.took < deadline + Duration::from_millis(1500),
        "answered in {:?}",
        attack.took
    );
    assert_eq!(
        attack.neighbour,
        StatusCode::CREATED,
        "the neighbour was served during the attack"
    );
    assert!(
        attack.neighbour_took < Duration::from_secs(2),
        "neighbour took {:?}",
        attack.neighbour_took
    );
    assert!(
        attack.rss_after_kib <= attack.rss_before_kib + RSS_MARGIN_KIB,
        "memory back to baseline: {} KiB before, {} KiB after",
        attack.rss_before_kib,
        attack.rss_after_kib
    );
}

const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_infinite_loop_is_stopped_at_the_deadline() {
    let a = attack(
        "loop",
        "[limits]\ncall_timeout_ms = 1000\nfuel = 1000000000000000\n",
    )
    .await;
    assert_contained(
        &a,
        StatusCode::INTERNAL_SERVER_ERROR,
        "deadline of 1000 ms",
        Duration::from_secs(1),
    );
}

#[tokio::test]
async fn a_fuel_burner_runs_out_of_fuel() {
    let a = attack("fuel", "[limits]\nfuel = 50000000\n").await;
    assert_contained(
        &a,
        StatusCode::INTERNAL_SERVER_ERROR,
        "CPU budget (fuel limit of 50000000 units)",
        DEFAULT_DEADLINE,
    );
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_cap() {
    let a = attack("memory", "[limits]\nmemory_mib = 32\n").await;
    assert_contained(
        &a,
        StatusCode::INTERNAL_SERVER_ERROR,
        "memory limit of 32 MiB",
        DEFAULT_DEADLINE,
    );
}

#[tokio::test]
async fn deep_recursion_overflows_the_guest_stack_not_the_host() {
    let a = attack("recursion", "").await;
    assert_contained(
        &a,
        StatusCode::INTERNAL_SERVER_ERROR,
        "overflowed its stack",
        DEFAULT_DEADLINE,
    );
}

#[tokio::test]
async fn a_panic_is_a_500() {
    let a = attack("panic", "").await;
    assert_contained(
        &a,
        StatusCode::INTERNAL_SERVER_ERROR,
        "crashed",
        DEFAULT_DEADLINE,
    );
}

#[tokio::test]
async fn a_100_mb_response_is_refused() {
    let a = attack("huge", "[limits]\nmemory_mib = 256\nfuel = 100000000000\n").await;
    // Refused while it is lifted, before the host holds a copy (hostcall fuel).
    assert_contained(
        &a,
        StatusCode::INTERNAL_SERVER_ERROR,
        "passed the host more than 4194304 bytes at once",
        DEFAULT_DEADLINE,
    );
}

#[tokio::test]
async fn etc_passwd_is_out_of_reach() {
    let a = attack("passwd", "").await;
    assert_contained(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "blocked",
        DEFAULT_DEADLINE,
    );
}

#[tokio::test]
async fn the_files_grant_cannot_be_escaped_with_dot_dot() {
    let a = attack("escape", "[grants]\nfiles = true\n").await;
    assert_contained(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "blocked",
        DEFAULT_DEADLINE,
    );
}

#[tokio::test]
async fn the_kv_quota_cannot_be_overflowed() {
    let a = attack("kv-flood", "[grants]\nkv = true\nkv_quota_bytes = 8192\n").await;
    assert_contained(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "kv quota of 8192 bytes is full",
        DEFAULT_DEADLINE,
    );
}

#[tokio::test]
async fn flooding_stdout_past_its_cap_ends_the_call() {
    let a = attack("print-flood", "").await;
    assert_contained(
        &a,
        StatusCode::INTERNAL_SERVER_ERROR,
        "crashed",
        DEFAULT_DEADLINE,
    );
}

#[tokio::test]
async fn kv_and_env_capabilities_work_when_granted() {
    let extra = "[grants]\nkv = true\n\n[env]\nGREETING = \"hello\"\n";
    let mut rt =
        TestRuntime::start(&[("caps", guests::CAPABILITY_BROKER, &manifest("caps", extra))])
            .await
            .unwrap();
    let body = json!({ "service_id": "capability-service", "plan_id": "capability-plan", "parameters": { "size": 3 } });
    let created = rt
        .osb(
            Method::PUT,
            "caps",
            "/v2/service_instances/c-1",
            Some(body.clone()),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    rt.restart().await.unwrap();
    let bind = json!({ "service_id": "capability-service", "plan_id": "capability-plan" });
    let bound = rt
        .osb(
            Method::PUT,
            "caps",
            "/v2/service_instances/c-1/service_bindings/b-1",
            Some(bind),
        )
        .await;
    assert_eq!(bound.status, StatusCode::CREATED, "{:?}", bound.body);
    let credentials = &bound.body["credentials"];
    assert_eq!(
        credentials["stored"],
        json!({ "size": 3 }),
        "kv kept across a restart"
    );
    assert_eq!(credentials["greeting"], "hello");
    assert_eq!(
        credentials["home"],
        Value::Null,
        "nothing of the host's environment leaks"
    );
    assert_eq!(credentials["keys"], json!(["instance/c-1"]));

    // Without the grant, kv is denied.
    let rt = TestRuntime::start(&[("caps", guests::CAPABILITY_BROKER, &manifest("caps", ""))])
        .await
        .unwrap();
    let denied = rt
        .osb(Method::PUT, "caps", "/v2/service_instances/c-2", Some(body))
        .await;
    assert_eq!(denied.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        denied.body["description"]
            .as_str()
            .unwrap()
            .contains("kv denied"),
        "{:?}",
        denied.body
    );
}

/// An in-process runtime serving hostile-broker (manifest extras `extra`) beside file-broker.
async fn hostile_beside_file_broker(extra: &str) -> TestRuntime {
    let file =
        std::fs::read_to_string(repo_root().join("examples/file-broker/file-broker.toml")).unwrap();
    TestRuntime::start(&[
        (
            "hostile",
            guests::HOSTILE_BROKER,
            &manifest("hostile", extra),
        ),
        ("file-broker", guests::FILE_BROKER, &file),
    ])
    .await
    .unwrap()
}

/// Median time of `count` provision + deprovision pairs of file-broker, one after another.
async fn neighbour_median(rt: &TestRuntime, tag: &str, count: usize) -> Duration {
    let body = json!({ "service_id": "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01",
                       "plan_id": "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101" });
    let query = "?service_id=5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01&plan_id=1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";
    let mut took = Vec::new();
    for i in 0..count {
        let path = format!("/v2/service_instances/{tag}-{i}");
        let started = Instant::now();
        let created = rt
            .osb(Method::PUT, "file-broker", &path, Some(body.clone()))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let deleted = rt
            .osb(
                Method::DELETE,
                "file-broker",
                &format!("{path}{query}"),
                None,
            )
            .await;
        assert_eq!(deleted.status, StatusCode::OK, "{:?}", deleted.body);
        took.push(started.elapsed());
    }
    took.sort();
    took[count / 2]
}

// Multi-threaded like the real server (`brokerbox serve`), whose executor has a thread per core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_burners_take_turns_and_leave_short_calls_alone() {
    // Each hostile call computes until its fuel runs out (about a quarter of a second).
    let extra = "[limits]\nfuel = 300000000\n";
    let rt = hostile_beside_file_broker(extra).await;
    let alone = neighbour_median(&rt, "alone", 15).await;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rt = &rt;
    let stop = &stop;
    // 24 burners, each starting a new call as soon as the last one ends.
    let burners = (0..24).map(|b| async move {
        let mut ended = Vec::new();
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let answer = rt
                .osb(
                    Method::PUT,
                    "hostile",
                    &format!("/v2/service_instances/burn-{b}-{i}"),
                    Some(hostile("fuel")),
                )
                .await;
            ended.push(
                answer.body["description"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
            i += 1;
        }
        ended
    });
    let measured = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let noisy = neighbour_median(rt, "noisy", 15).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        noisy
    };
    let (ended, noisy) = tokio::join!(futures::future::join_all(burners), measured);
    // The burners did burn: their calls end out of fuel or past their deadline.
    let ended: Vec<String> = ended.into_iter().flatten().collect();
    assert!(!ended.is_empty());
    for description in &ended {
        assert!(
            description.contains("CPU budget") || description.contains("deadline"),
            "{description}"
        );
    }
    // Without turns, every short call waits behind the busy calls at each await (~7× slower
    // with 16 burners when this test was written); with them, it hardly notices.
    assert!(
        noisy < alone * 3 + Duration::from_millis(10),
        "the neighbour's median went from {alone:?} alone to {noisy:?} next to the burners"
    );
}

// Multi-threaded like the real server (`brokerbox serve`), whose executor has a thread per core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_saturating_its_concurrency_cap_does_not_block_its_neighbour() {
    let extra = "[limits]\ncall_timeout_ms = 1500\nfuel = 1000000000000000\nmax_concurrency = 2\n";
    let rt = hostile_beside_file_broker(extra).await;
    let rt = &rt;
    let loops = (0..8).map(|i| async move {
        rt.osb(
            Method::PUT,
            "hostile",
            &format!("/v2/service_instances/loop-{i}"),
            Some(hostile("loop")),
        )
        .await
    });
    let neighbour = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let body = json!({ "service_id": "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01", "plan_id": "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101" });
        let answer = rt
            .osb(
                Method::PUT,
                "file-broker",
                "/v2/service_instances/n-1",
                Some(body),
            )
            .await;
        (answer, started.elapsed())
    };
    let attack_started = Instant::now();
    let (answers, (neighbour, took)) = tokio::join!(futures::future::join_all(loops), neighbour);
    let attack_took = attack_started.elapsed();
    assert_eq!(neighbour.status, StatusCode::CREATED);
    // Every hostile call lasts its whole 1.5 s deadline (running or waiting for a slot); the
    // neighbour is answered well before that, not after the attack.
    assert!(
        took < Duration::from_millis(1300),
        "the neighbour waited {took:?}"
    );
    let descriptions: Vec<String> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
            a.body["description"].as_str().unwrap().to_string()
        })
        .collect();
    // Two calls run; the others wait for a slot within the same deadline (they end either
    // waiting, "concurrency limit", or with what is left of it, "deadline"): nothing piles up.
    for description in &descriptions {
        let expected =
            description.contains("concurrency limit") || description.contains("deadline");
        assert!(expected, "{description}");
    }
    assert!(
        attack_took < Duration::from_millis(3000),
        "the capped calls took {attack_took:?}"
    );
}

#[tokio::test]
async fn outbound_http_reaches_only_allowlisted_hosts() {
    let a = attack("http", "[grants]\noutbound_http = [\"127.0.0.1:2\"]\n").await;
    assert_contained(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "HttpRequestDenied",
        DEFAULT_DEADLINE,
    );

    // A local "cloud API" on 127.0.0.1, allowlisted by host and port.
    let port = brokerbox_tests::ping_api().await;
    let extra = format!(
        "[grants]\noutbound_http = [\"127.0.0.1:{port}\"]\noutbound_http_private = [\"127.0.0.1:{port}\"]\n"
    );
    let rt = TestRuntime::start(&[("caps", guests::CAPABILITY_BROKER, &manifest("caps", &extra))])
        .await
        .unwrap();
    let call = |url: String| json!({ "service_id": "capability-service", "plan_id": "capability-plan", "parameters": { "url": url } });
    let allowed = rt
        .osb(
            Method::PUT,
            "caps",
            "/v2/service_instances/h-1",
            Some(call(format!("http://127.0.0.1:{port}/ping"))),
        )
        .await;
    assert_eq!(allowed.status, StatusCode::CREATED, "{:?}", allowed.body);
    let fetched = rt
        .osb(Method::GET, "caps", "/v2/service_instances/h-1", None)
        .await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["dashboard_url"], "200 pong");
    assert_eq!(allowed.body["dashboard_url"], "200 pong");
    let other_port = rt
        .osb(
            Method::PUT,
            "caps",
            "/v2/service_instances/h-2",
            Some(call(format!("http://127.0.0.1:{}/ping", port + 1))),
        )
        .await;
    assert_eq!(other_port.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        other_port.body["description"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied"),
        "{:?}",
        other_port.body
    );
}

/// Provisions `id` on `rt`'s broker `caps`, whose guest calls `url`; the answer.
async fn call_out(rt: &TestRuntime, id: &str, url: String) -> brokerbox_tests::Answer {
    let body = json!({ "service_id": "capability-service", "plan_id": "capability-plan",
        "parameters": { "url": url } });
    rt.osb(
        Method::PUT,
        "caps",
        &format!("/v2/service_instances/{id}"),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_granted_name_that_resolves_to_loopback_is_refused_unless_the_manifest_allows_it() {
    let port = brokerbox_tests::ping_api().await;
    let granted = format!("[grants]\noutbound_http = [\"localhost:{port}\"]\n");
    let rt = TestRuntime::start(&[(
        "caps",
        guests::CAPABILITY_BROKER,
        &manifest("caps", &granted),
    )])
    .await
    .unwrap();
    // `localhost` is granted, but it resolves to 127.0.0.1 (or ::1): refused by default.
    let refused = call_out(&rt, "e-1", format!("http://localhost:{port}/ping")).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let said = refused.body["description"].as_str().unwrap();
    assert!(said.contains("DestinationIpProhibited"), "{said}");
    drop(rt);

    // Allowed for that host explicitly; a redirect from it to another granted host that is
    // not allowed private addresses is checked again, and refused.
    let allowed = format!(
        "[grants]\noutbound_http = [\"localhost:{port}\", \"127.0.0.1:{port}\"]\n\
         outbound_http_private = [\"localhost:{port}\"]\n"
    );
    let rt = TestRuntime::start(&[(
        "caps",
        guests::CAPABILITY_BROKER,
        &manifest("caps", &allowed),
    )])
    .await
    .unwrap();
    let reached = call_out(&rt, "e-2", format!("http://localhost:{port}/ping")).await;
    assert_eq!(reached.status, StatusCode::CREATED, "{:?}", reached.body);
    assert_eq!(reached.body["dashboard_url"], "200 pong");
    let followed = call_out(
        &rt,
        "e-3",
        format!("http://localhost:{port}/redirect?to=http://localhost:{port}/ping"),
    )
    .await;
    assert_eq!(
        followed.body["dashboard_url"], "200 pong",
        "{:?}",
        followed.body
    );
    let redirected = call_out(
        &rt,
        "e-4",
        format!("http://localhost:{port}/redirect?to=http://127.0.0.1:{port}/ping"),
    )
    .await;
    assert_eq!(redirected.status, StatusCode::UNPROCESSABLE_ENTITY);
    let said = redirected.body["description"].as_str().unwrap();
    assert!(said.contains("DestinationIpProhibited"), "{said}");
}

#[test]
fn a_private_grant_must_name_a_granted_host() {
    let error = brokerbox::manifest::Manifest::parse(&manifest(
        "caps",
        "[grants]\noutbound_http = [\"api.example.com\"]\noutbound_http_private = [\"10.0.0.1\"]\n",
    ))
    .unwrap_err();
    assert!(format!("{error:#}").contains("10.0.0.1"), "{error:#}");
}

#[tokio::test]
async fn oversized_operation_data_is_refused() {
    let a = attack("big-data", "").await;
    assert_contained(
        &a,
        StatusCode::INTERNAL_SERVER_ERROR,
        "operation data of 1048576 bytes, over the cap of 65536",
        DEFAULT_DEADLINE,
    );
}
