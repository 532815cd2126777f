//! Tenant isolation under attack: each test runs hostile-broker attacks in a real runtime
//! process (on SQLite, or PostgreSQL when the suite runs there) next to file-broker, whose
//! provisions must keep being answered within [`NEIGHBOUR_BOUND`] throughout. After the attack
//! the state store must still accept writes, every provision the neighbour was answered must be
//! there, and the runtime's memory must be back within [`RSS_MARGIN_KIB`] of its baseline.

use crate::process::{state_url, RuntimeProcess};
use brokerbox_tests::{guests, manifest, repo_root, send_osb};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FILE_SERVICE: &str = "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01";
const FILE_SMALL: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";
/// The longest a neighbour's provision may take during an attack.
const NEIGHBOUR_BOUND: Duration = Duration::from_secs(1);
/// Memory the runtime may keep above its baseline after an attack.
const RSS_MARGIN_KIB: u64 = 64 * 1024;

/// A runtime process serving hostile brokers beside file-broker.
struct Scene {
    _dir: tempfile::TempDir,
    brokers: PathBuf,
    process: RuntimeProcess,
}

/// The provision body of `attack` on the hostile copy whose service id is `service`.
fn hostile(service: &str, attack: &str) -> Value {
    let plan = if service == "hostile-service" {
        format!("{attack}-plan")
    } else {
        format!("{service}-{attack}-plan")
    };
    json!({ "service_id": service, "plan_id": plan,
            "organization_guid": "org", "space_guid": "space" })
}

fn file_body() -> Value {
    json!({ "service_id": FILE_SERVICE, "plan_id": FILE_SMALL,
            "organization_guid": "org", "space_guid": "space" })
}

/// The manifest extras of hostile copy `name` (its own service id) with `extra`.
fn hostile_manifest(name: &str, extra: &str) -> String {
    let service = if name == "hostile" {
        String::new()
    } else {
        format!("[env]\nSERVICE_ID = \"{name}-service\"\n")
    };
    manifest(name, &format!("{extra}\n{service}"))
}

impl Scene {
    /// Starts a runtime with hostile copies `(name, manifest extras)` and file-broker.
    async fn start(hostiles: &[(&str, &str)], args: &[&str]) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let brokers = dir.path().join("brokers");
        std::fs::create_dir_all(&brokers).unwrap();
        for (name, extra) in hostiles {
            std::fs::copy(guests::HOSTILE_BROKER, brokers.join(format!("{name}.wasm"))).unwrap();
            std::fs::write(
                brokers.join(format!("{name}.toml")),
                hostile_manifest(name, extra),
            )
            .unwrap();
        }
        std::fs::copy(guests::FILE_BROKER, brokers.join("file-broker.wasm")).unwrap();
        let file_manifest = repo_root().join("examples/file-broker/file-broker.toml");
        std::fs::copy(file_manifest, brokers.join("file-broker.toml")).unwrap();
        let process =
            RuntimeProcess::start(&dir.path().join("data"), &brokers, state_url().await, args)
                .await;
        Scene {
            _dir: dir,
            brokers,
            process,
        }
    }

    fn instance(&self, broker: &str, id: &str) -> String {
        format!("{}/v2/service_instances/{id}", self.process.url(broker))
    }

    /// Warms up file-broker and hostile `(name, service)` copies, then takes the baseline RSS.
    async fn baseline(&self, hostiles: &[(&str, &str)]) -> u64 {
        for (name, service) in hostiles {
            let url = self.instance(name, &format!("warm-{name}"));
            let (status, body) =
                send_osb(Method::PUT, url, name, Some(hostile(service, "ok"))).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let url = self.instance("file-broker", "warm");
        let (status, body) = send_osb(Method::PUT, url, "file-broker", Some(file_body())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.process.rss_kib()
    }

    /// After an attack: the store takes writes, every instance the neighbour was answered is
    /// there, and memory is back near `rss_before_kib`.
    async fn assert_healthy(&self, neighbour: &[String], rss_before_kib: u64) {
        let url = self.instance("file-broker", "after-the-attack");
        let (status, body) = send_osb(Method::PUT, url, "file-broker", Some(file_body())).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "the store takes writes: {body}"
        );
        for id in neighbour {
            let url = self.instance("file-broker", id);
            let (status, body) = send_osb(Method::PUT, url, "file-broker", Some(file_body())).await;
            assert_eq!(status, StatusCode::OK, "instance {id} is there: {body}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after_kib = self.process.rss_kib();
        assert!(
            rss_after_kib <= rss_before_kib + RSS_MARGIN_KIB,
            "memory back to baseline: {rss_before_kib} KiB before, {rss_after_kib} KiB after"
        );
    }
}

/// A neighbour provisioning file-broker instances one after another during an attack.
struct Neighbour {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<String>, Duration)>,
}

impl Neighbour {
    fn start(scene: &Scene, tag: &str) -> Neighbour {
        let stop = Arc::new(AtomicBool::new(false));
        let base = scene.process.url("file-broker");
        let (flag, tag) = (stop.clone(), tag.to_string());
        let task = tokio::spawn(async move {
            let (mut created, mut slowest) = (Vec::new(), Duration::ZERO);
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                let id = format!("{tag}-{i}");
                let url = format!("{base}/v2/service_instances/{id}");
                let started = Instant::now();
                let (status, body) =
                    send_osb(Method::PUT, url, "file-broker", Some(file_body())).await;
                slowest = slowest.max(started.elapsed());
                assert_eq!(
                    status,
                    StatusCode::CREATED,
                    "the neighbour is served: {body}"
                );
                created.push(id);
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (created, slowest)
        });
        Neighbour { stop, task }
    }

    /// Stops; checks every provision was answered within the bound; returns their ids.
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let (created, slowest) = self.task.await.expect("the neighbour ran");
        assert!(!created.is_empty(), "the neighbour made provisions");
        assert!(
            slowest < NEIGHBOUR_BOUND,
            "the neighbour's slowest provision took {slowest:?}"
        );
        created
    }
}

/// The description of an OSB error body.
fn description(body: &Value) -> &str {
    body["description"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_writes_cut_at_their_deadline_never_wedge_the_state_store() {
    let extra = "[limits]\ncall_timeout_ms = 150\n[grants]\nkv = true\n";
    let mut scene = Scene::start(&[("hostile", extra)], &[]).await;
    let rss = scene.baseline(&[("hostile", "hostile-service")]).await;
    let neighbour = Neighbour::start(&scene, "n");
    for wave in 0..6 {
        let calls = (0..32).map(|i| {
            let url = scene.instance("hostile", &format!("churn-{wave}-{i}"));
            send_osb(
                Method::PUT,
                url,
                "hostile",
                Some(hostile("hostile-service", "kv-churn")),
            )
        });
        for (status, body) in futures::future::join_all(calls).await {
            // Stopped at the deadline (mostly mid-write), or out of kv calls.
            let ended = (status == StatusCode::INTERNAL_SERVER_ERROR
                && description(&body).contains("deadline"))
                || (status == StatusCode::UNPROCESSABLE_ENTITY
                    && description(&body).contains("kv calls"));
            assert!(ended, "{status} {body}");
        }
    }
    let created = neighbour.finish().await;
    scene.assert_healthy(&created, rss).await;
    // Writes made after the attack are real commits: they survive a SIGKILL.
    let url = scene.instance("hostile", "after-churn");
    let (status, body) = send_osb(
        Method::PUT,
        url.clone(),
        "hostile",
        Some(hostile("hostile-service", "ok")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    scene.process.restart().await;
    let url = scene.instance("hostile", "after-churn");
    let (status, body) = send_osb(
        Method::PUT,
        url,
        "hostile",
        Some(hostile("hostile-service", "ok")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "kept across the restart: {body}");
    for id in &created {
        let url = scene.instance("file-broker", id);
        let (status, _) = send_osb(Method::PUT, url, "file-broker", Some(file_body())).await;
        assert_eq!(status, StatusCode::OK, "{id} kept across the restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_of_a_million_empty_endpoints_costs_the_host_nothing() {
    let extra = "[limits]\nmemory_mib = 256\nfuel = 100000000000\n";
    let scene = Scene::start(&[("hostile", extra)], &[]).await;
    let rss = scene.baseline(&[("hostile", "hostile-service")]).await;
    let body = hostile("hostile-service", "endpoints");
    let url = scene.instance("hostile", "endpoints");
    let (status, answer) = send_osb(Method::PUT, url.clone(), "hostile", Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let neighbour = Neighbour::start(&scene, "n");
    for i in 0..3 {
        let bind = format!("{url}/service_bindings/b-{i}");
        let (status, answer) = send_osb(Method::PUT, bind, "hostile", Some(body.clone())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
        assert!(description(&answer).contains("bytes at once"), "{answer}");
    }
    let created = neighbour.finish().await;
    scene.assert_healthy(&created, rss).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_filling_every_instance_slot_leave_the_neighbour_its_share() {
    // 100 live instances: 80 shared, 20 reserved; a broker holds at most 25.
    let extra = "[limits]\ncall_timeout_ms = 4000\nmax_concurrency = 100\n\
                 [operations]\nsync_window_ms = 10\n";
    let copies = [
        "hostile",
        "hostile-b",
        "hostile-c",
        "hostile-d",
        "hostile-e",
    ];
    let hostiles: Vec<(&str, &str)> = copies.iter().map(|c| (*c, extra)).collect();
    let scene = Scene::start(&hostiles, &["--max-instances", "100"]).await;
    let services: Vec<String> = copies
        .iter()
        .map(|c| {
            if *c == "hostile" {
                "hostile-service".to_string()
            } else {
                format!("{c}-service")
            }
        })
        .collect();
    let warm: Vec<(&str, &str)> = copies
        .iter()
        .zip(&services)
        .map(|(c, s)| (*c, s.as_str()))
        .collect();
    let rss = scene.baseline(&warm).await;
    // 5 brokers x 40 sleeping calls: far more than the 100 slots. Each is accepted (202) and
    // sleeps in the background until its deadline, holding a slot or waiting for one.
    let started = Instant::now();
    let calls = warm.iter().flat_map(|(name, service)| {
        let scene = &scene;
        (0..40).map(move |i| async move {
            let url = format!(
                "{}?accepts_incomplete=true",
                scene.instance(name, &format!("sleep-{i}"))
            );
            send_osb(Method::PUT, url, name, Some(hostile(service, "sleep"))).await
        })
    });
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "all accepted at once"
    );
    let neighbour = Neighbour::start(&scene, "n");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let created = neighbour.finish().await;
    // Let the sleepers end at their deadline before measuring memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    scene.assert_healthy(&created, rss).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_that_stalls_does_not_hold_up_another_brokers_reload() {
    let scene = Scene::start(&[], &["--watch"]).await;
    let rss = scene.baseline(&[]).await;
    let neighbour = Neighbour::start(&scene, "n");
    // A broker whose catalog never comes, with the longest call timeout there is...
    let stall = "[limits]\ncall_timeout_ms = 600000\n[env]\nSTALL_CATALOG = \"1\"\n";
    std::fs::write(
        scene.brokers.join("stalling.toml"),
        manifest("stalling", stall),
    )
    .unwrap();
    std::fs::copy(guests::HOSTILE_BROKER, scene.brokers.join("stalling.wasm")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...and, just after it, a good one.
    let dropped = Instant::now();
    std::fs::write(
        scene.brokers.join("hostile-b.toml"),
        hostile_manifest("hostile-b", ""),
    )
    .unwrap();
    std::fs::copy(guests::HOSTILE_BROKER, scene.brokers.join("hostile-b.wasm")).unwrap();
    let catalog = format!("{}/v2/catalog", scene.process.url("hostile-b"));
    loop {
        let (status, _) = send_osb(Method::GET, catalog.clone(), "hostile-b", None).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(3),
            "the good broker was not served within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stalling broker is refused at its load deadline, not served.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let catalog = format!("{}/v2/catalog", scene.process.url("stalling"));
    let (status, _) = send_osb(Method::GET, catalog, "stalling", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "not served");
    let created = neighbour.finish().await;
    scene.assert_healthy(&created, rss).await;
}

/// Bytes and entries under `dir`.
fn usage(dir: &std::path::Path) -> (u64, u64) {
    let (mut bytes, mut entries) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        bytes += meta.len();
        entries += 1;
    }
    (bytes, entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_grant_is_held_to_its_quota_of_bytes_and_files() {
    let extra = "[grants]\nfiles = true\nfiles_quota_bytes = 8388608\nfiles_quota_count = 50\n";
    let scene = Scene::start(&[("hostile", extra)], &[]).await;
    let rss = scene.baseline(&[("hostile", "hostile-service")]).await;
    let neighbour = Neighbour::start(&scene, "n");
    let url = scene.instance("hostile", "flood");
    let body = hostile("hostile-service", "files-flood");
    let (status, answer) = send_osb(Method::PUT, url, "hostile", Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(description(&answer).contains("blocked"), "{answer}");
    let files = scene._dir.path().join("data/brokers/hostile/files");
    let (bytes, _) = usage(&files);
    assert!(bytes <= 8 * 1024 * 1024, "{bytes} bytes on disk");
    assert!(
        bytes >= 7 * 1024 * 1024,
        "the quota was usable: {bytes} bytes"
    );
    // Deleting files frees the quota; the file count is capped too.
    for entry in std::fs::read_dir(&files).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    // Deleted behind the host's back: seen at the next measure, at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let url = scene.instance("hostile", "many");
    let body = hostile("hostile-service", "files-many");
    let (status, answer) = send_osb(Method::PUT, url, "hostile", Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(description(&answer).contains("after 50 files"), "{answer}");
    assert_eq!(usage(&files).1, 50);
    let created = neighbour.finish().await;
    scene.assert_healthy(&created, rss).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_random_request_ends_the_call_at_once() {
    let extra = "[limits]\ncall_timeout_ms = 2000\nmemory_mib = 256\n";
    let scene = Scene::start(&[("hostile", extra)], &[]).await;
    let rss = scene.baseline(&[("hostile", "hostile-service")]).await;
    let neighbour = Neighbour::start(&scene, "n");
    let started = Instant::now();
    let url = scene.instance("hostile", "random");
    let body = hostile("hostile-service", "random");
    let (status, answer) = send_osb(Method::PUT, url, "hostile", Some(body)).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    assert!(description(&answer).contains("exceeds limit"), "{answer}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let created = neighbour.finish().await;
    scene.assert_healthy(&created, rss).await;
}

/// What one lifecycle step got: an answer, or a connection the client dropped.
async fn step(
    client: &reqwest::Client,
    method: Method,
    url: String,
    body: Option<Value>,
    cut_after: Duration,
) -> Option<StatusCode> {
    let request = client
        .request(method, url)
        .basic_auth("file-broker", Some("file-broker-secret"))
        .header("X-Broker-API-Version", "2.17")
        .timeout(cut_after);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.ok().map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_mid_request_lose_nothing_that_was_answered() {
    let scene = Scene::start(&[], &[]).await;
    let base = scene.process.url("file-broker");
    let query = format!("?service_id={FILE_SERVICE}&plan_id={FILE_SMALL}");
    // Each lifecycle's client hangs up after a random time: often before the answer.
    let client = reqwest::Client::new();
    let mut provisioned = Vec::new();
    let mut bound = Vec::new();
    let mut deleted = Vec::new();
    for round in 0..3 {
        let lifecycles = (0..1000).map(|i| {
            let (client, base, query) = (&client, &base, &query);
            async move {
                let cut = |salt: u64| {
                    // One lifecycle in five waits for its answers, so that some are answered
                    // however slow the machine is; the others hang up within 200 ms.
                    if i % 5 == 4 {
                        return Duration::from_secs(60);
                    }
                    let x = (round * 7919 + i * 104_729 + salt * 1_299_709) % 4000;
                    Duration::from_micros(200 + x * 50)
                };
                let id = format!("r{round}-{i}");
                let instance = format!("{base}/v2/service_instances/{id}");
                // Binding ids are unique across a broker: one per lifecycle.
                let binding = format!("{instance}/service_bindings/b-{id}");
                // (provision, bind, delete): None when not sent; Some(None) when cut off.
                let mut got = (None, None, None);
                got.0 = Some(
                    step(
                        client,
                        Method::PUT,
                        instance.clone(),
                        Some(file_body()),
                        cut(1),
                    )
                    .await,
                );
                // Half the lifecycles stop at the instance, so both outcomes are seen.
                if got.0 == Some(Some(StatusCode::CREATED)) && i % 2 == 1 {
                    got.1 =
                        Some(step(client, Method::PUT, binding, Some(file_body()), cut(2)).await);
                    if i % 3 == 0 && got.1 == Some(None) {
                        // The binding may or may not exist: the delete may answer 422 or 200.
                        let url = format!("{instance}{query}");
                        got.2 = Some(step(client, Method::DELETE, url, None, cut(3)).await);
                    }
                }
                (id, got)
            }
        });
        for (id, (provision, bind, delete)) in futures::future::join_all(lifecycles).await {
            match (provision, bind, delete) {
                (_, _, Some(Some(StatusCode::OK))) => deleted.push(id),
                // Cut off: the instance may or may not be gone; nothing to check.
                (_, _, Some(_)) => {}
                (_, Some(Some(StatusCode::CREATED)), _) => bound.push(id),
                (Some(Some(StatusCode::CREATED)), _, _) => provisioned.push(id),
                _ => {}
            }
        }
    }
    assert!(
        !provisioned.is_empty() && !bound.is_empty(),
        "some requests were answered: {} provisions, {} bindings",
        provisioned.len(),
        bound.len()
    );
    // The store takes writes, and every answered request's record is there.
    let answered = |method: Method, url: String, body: Option<Value>| async move {
        send_osb(method, url, "file-broker", body).await.0
    };
    let probe = format!("{base}/v2/service_instances/after-the-drops");
    assert_eq!(
        answered(Method::PUT, probe, Some(file_body())).await,
        StatusCode::CREATED
    );
    for id in &provisioned {
        let url = format!("{base}/v2/service_instances/{id}");
        let status = answered(Method::PUT, url, Some(file_body())).await;
        assert_eq!(status, StatusCode::OK, "instance {id}");
    }
    for id in &bound {
        let url = format!("{base}/v2/service_instances/{id}/service_bindings/b-{id}");
        let status = answered(Method::PUT, url, Some(file_body())).await;
        assert_eq!(status, StatusCode::OK, "binding of {id}");
    }
    for id in &deleted {
        let url = format!("{base}/v2/service_instances/{id}{query}");
        let status = answered(Method::DELETE, url, None).await;
        assert_eq!(status, StatusCode::GONE, "deleted instance {id}");
    }
    // No instance is left stuck by a dropped request: each one a hung-up provision created
    // ends ready (its operation ran to its end) or was never created. A provision whose intent
    // was written but whose operation nobody ran would answer 422 (in progress) forever.
    let ids: Vec<String> = (0..3)
        .flat_map(|round| (0..1000).map(move |i| format!("r{round}-{i}")))
        .collect();
    let stuck: Vec<(String, StatusCode)> = futures::stream::iter(ids)
        .map(|id| {
            let url = format!("{base}/v2/service_instances/{id}");
            async move {
                let mut status = StatusCode::UNPROCESSABLE_ENTITY;
                for _ in 0..100 {
                    status = answered(Method::PUT, url.clone(), Some(file_body())).await;
                    if status != StatusCode::UNPROCESSABLE_ENTITY {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (id, status)
            }
        })
        .buffer_unordered(16)
        .filter(|(_, status)| {
            std::future::ready(*status != StatusCode::OK && *status != StatusCode::CREATED)
        })
        .collect()
        .await;
    assert!(stuck.is_empty(), "instances left stuck: {stuck:?}");
}
