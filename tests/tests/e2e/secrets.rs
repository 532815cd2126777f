//! Secrets at rest: what the state store keeps is sealed (parameters, credentials, operation
//! data, kv values), reads back, survives restarts; a wrong or missing keyring refuses to start
//! without writing; a key rotation under load loses nothing and retires the old key; a
//! clear-text database from before encryption is sealed on upgrade.

use brokerbox::config::RuntimeConfig;
use brokerbox_tests::{guests, manifest, send_osb, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "hunter2-param-secret";
/// The manifest's `[env]` value: a secret too, and the guest puts it in each binding.
const GREETING: &str = "greeting-env-secret";
const OPERATOR: &str = "operator-token-0123456789";
const SERVICE: &str = "capability-service";
const PLAN: &str = "capability-plan";

/// The capability broker: stores a provision's parameters in kv and hands them back as the
/// credentials of each binding.
fn caps() -> String {
    manifest(
        "caps",
        &format!("[grants]\nkv = true\n[env]\nGREETING = \"{GREETING}\"\n"),
    )
}

fn admin_config() -> RuntimeConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runtime.toml");
    std::fs::write(&path, format!("[admin]\noperator_token = \"{OPERATOR}\"\n")).unwrap();
    RuntimeConfig::load(&path).unwrap()
}

fn provision_body(secret: &str) -> Value {
    json!({ "service_id": SERVICE, "plan_id": PLAN,
        "parameters": { "password": secret, "region": "eu" } })
}

fn bind_body() -> Value {
    json!({ "service_id": SERVICE, "plan_id": PLAN })
}

fn binding_path(instance: &str, binding: &str) -> String {
    format!("/v2/service_instances/{instance}/service_bindings/{binding}")
}

/// Whether `raw` holds `text`, as text or hex-encoded (PostgreSQL dumps bytea as hex).
fn holds(raw: &[u8], text: &str) -> bool {
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    let found = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    found(text.as_bytes()) || found(hex.as_bytes())
}

/// Values of every secret-bearing column not sealed under `key` (`bbx:1:KEY:`), or not sealed
/// at all when `key` is empty.
async fn not_under(rt: &TestRuntime, key: &str) -> i64 {
    let prefix = format!("bbx:1:{key}");
    let mut n = 0;
    for (table, column) in [
        ("instances", "attributes"),
        ("instances", "parameters"),
        ("instances", "context"),
        ("bindings", "attributes"),
        ("bindings", "result"),
        ("operations", "request"),
        ("operations", "guest_data"),
    ] {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM {table} WHERE {column} IS NOT NULL \
             AND {column} NOT LIKE '{prefix}%'"
        );
        n += rt.state_count(&sql).await;
    }
    let kv_prefix = if rt.on_postgres() {
        format!("encode(substr(value, 1, {}), 'escape')", prefix.len())
    } else {
        format!("CAST(substr(value, 1, {}) AS TEXT)", prefix.len())
    };
    let sql = format!("SELECT COUNT(*) AS n FROM kv WHERE {kv_prefix} <> '{prefix}'");
    n + rt.state_count(&sql).await
}

async fn keys(rt: &TestRuntime) -> Value {
    let url = format!("http://{}/admin/keys", rt.server().addr);
    let response = rt
        .client()
        .get(url)
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Waits (up to 60 s) until every value is under the primary key and the older keys are
/// retired; the key status then.
async fn resealed_and_retired(rt: &TestRuntime) -> Value {
    let started = Instant::now();
    loop {
        let status = keys(rt).await;
        if status["keys"].as_array().unwrap().len() == 1 && status["remaining"] == 0 {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not resealed and retired: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The kept manifests of broker `caps` (the runtime keeps each version for rollbacks).
fn kept_manifests(rt: &TestRuntime) -> Vec<std::path::PathBuf> {
    let versions = rt.dir.path().join("data/versions/caps");
    let files = std::fs::read_dir(versions)
        .unwrap()
        .flatten()
        .map(|f| f.path());
    files
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect()
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_read_back_after_a_restart() {
    let mut rt = TestRuntime::start_with(&[("caps", guests::CAPABILITY_BROKER, &caps())], |c| {
        c.runtime_config = admin_config();
    })
    .await
    .unwrap();
    // A parameter that fails the schema is named, its value is not shown.
    let mut wrong = provision_body(SECRET);
    wrong["parameters"]["password"] = json!(918_273_645);
    let refused = rt
        .osb(
            Method::PUT,
            "caps",
            "/v2/service_instances/i-0",
            Some(wrong),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let said = refused.body["description"].as_str().unwrap();
    assert!(said.contains("/password"), "{said}");
    assert!(!said.contains("918273645"), "{said}");
    let made = rt
        .osb(
            Method::PUT,
            "caps",
            "/v2/service_instances/i-1",
            Some(provision_body(SECRET)),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let bound = rt
        .osb(
            Method::PUT,
            "caps",
            &binding_path("i-1", "b-1"),
            Some(bind_body()),
        )
        .await;
    assert_eq!(bound.status, StatusCode::CREATED, "{:?}", bound.body);
    assert_eq!(bound.body["credentials"]["stored"]["password"], SECRET);
    assert_eq!(bound.body["credentials"]["greeting"], GREETING);

    // The manifests the runtime keeps (for rollbacks) are sealed: `[env]` holds secrets.
    let kept = kept_manifests(&rt);
    assert!(!kept.is_empty());
    for file in kept {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !holds(&bytes, GREETING),
            "{} holds the [env] value",
            file.display()
        );
    }

    // Neither the parameter nor the credentials holding it lie anywhere in the store.
    let raw = rt.raw_state().await;
    assert!(
        raw.len() > 4096,
        "the raw state was read ({} bytes)",
        raw.len()
    );
    assert!(holds(&raw, "capability-service"), "the dump is readable");
    assert!(!holds(&raw, SECRET), "the secret is in the raw state");
    assert!(
        !holds(&raw, GREETING),
        "the credentials are in the raw state"
    );
    assert_eq!(not_under(&rt, "k").await, 0, "every secret value is sealed");
    // Nor in what the operator reads.
    for path in ["audit", "operations", "keys"] {
        let url = format!("http://{}/admin/{path}", rt.server().addr);
        let answer = rt
            .client()
            .get(url)
            .bearer_auth(OPERATOR)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let text = answer.text().await.unwrap();
        assert!(!text.contains(SECRET), "{path}: {text}");
    }

    for round in 0..2 {
        let fetched = rt
            .osb(Method::GET, "caps", &binding_path("i-1", "b-1"), None)
            .await;
        assert_eq!(fetched.status, StatusCode::OK, "round {round}");
        assert_eq!(fetched.body["credentials"]["stored"]["password"], SECRET);
        // The plan's schema marks `password` as a password: a fetch does not show it.
        let instance = rt
            .osb(Method::GET, "caps", "/v2/service_instances/i-1", None)
            .await;
        assert_eq!(instance.status, StatusCode::OK);
        assert_eq!(instance.body["parameters"], json!({ "region": "eu" }));
        rt.restart().await.unwrap();
    }
}

#[tokio::test]
async fn a_wrong_or_missing_keyring_refuses_to_start_and_writes_nothing() {
    let mut rt = TestRuntime::start(&[("caps", guests::CAPABILITY_BROKER, &caps())])
        .await
        .unwrap();
    let made = rt
        .osb(
            Method::PUT,
            "caps",
            "/v2/service_instances/i-1",
            Some(provision_body(SECRET)),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    rt.stop().await.unwrap();
    let keyring = rt.dir.path().join("data/keyring.toml");
    let original = std::fs::read_to_string(&keyring).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&keyring).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the keyring is its owner's only");
    }
    let state = "SELECT id || ' ' || master || ' ' || wrapped AS r FROM data_keys";
    let keys_before = rt.state_rows(state).await;
    let runtimes = "SELECT COUNT(*) AS n FROM runtimes";
    let runtimes_before = rt.state_count(runtimes).await;

    std::fs::write(
        &keyring,
        "key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n",
    )
    .unwrap();
    let error = format!("{:#}", rt.restart().await.unwrap_err());
    assert!(error.contains("does not open this database"), "{error}");
    assert!(error.contains("keyring.toml"), "{error}");

    std::fs::remove_file(&keyring).unwrap();
    let error = format!("{:#}", rt.restart().await.unwrap_err());
    assert!(error.contains("sealed under master key"), "{error}");
    assert!(!keyring.exists(), "no new keyring replaces the lost one");

    assert_eq!(
        rt.state_rows(state).await,
        keys_before,
        "the keys are untouched"
    );
    assert_eq!(rt.state_count(runtimes).await, runtimes_before);
    std::fs::write(&keyring, original).unwrap();
    rt.restart().await.unwrap();
    let fetched = rt
        .osb(Method::GET, "caps", "/v2/service_instances/i-1", None)
        .await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["parameters"]["region"], "eu");
}

/// Provision, bind, unbind, deprovision `id`; the number of answers that were not 2xx.
async fn lifecycle(base: &str, id: &str) -> u64 {
    let instance = format!("{base}/v2/service_instances/{id}");
    let binding = format!("{instance}/service_bindings/{id}-b");
    let query = format!("?service_id={SERVICE}&plan_id={PLAN}");
    let steps = [
        (Method::PUT, instance.clone(), Some(provision_body(id))),
        (Method::PUT, binding.clone(), Some(bind_body())),
        (Method::DELETE, format!("{binding}{query}"), None),
        (Method::DELETE, format!("{instance}{query}"), None),
    ];
    let mut failed = 0;
    for (method, url, body) in steps {
        let (status, body) = send_osb(method, url, "caps", body).await;
        if !status.is_success() {
            eprintln!("{id}: {status} {body}");
            failed += 1;
        }
    }
    failed
}

#[tokio::test]
async fn a_key_rotation_under_load_fails_nothing_reseals_every_value_and_retires_the_old_key() {
    let mut rt = TestRuntime::start_with(&[("caps", guests::CAPABILITY_BROKER, &caps())], |c| {
        c.runtime_config = admin_config();
    })
    .await
    .unwrap();
    // State from before the rotation: instances with bindings, left in place.
    for i in 0..5 {
        let id = format!("kept-{i}");
        let path = format!("/v2/service_instances/{id}");
        let made = rt
            .osb(Method::PUT, "caps", &path, Some(provision_body(&id)))
            .await;
        assert_eq!(made.status, StatusCode::CREATED);
        let bound = rt
            .osb(
                Method::PUT,
                "caps",
                &binding_path(&id, &format!("{id}-b")),
                Some(bind_body()),
            )
            .await;
        assert_eq!(bound.status, StatusCode::CREATED);
    }
    let before = keys(&rt).await;
    let old = before["primary"].as_str().unwrap().to_string();
    assert_eq!(before["keys"].as_array().unwrap().len(), 1);
    assert_eq!(before["remaining"], 0);

    // A continuous lifecycle load while the key rotates.
    let stop = Arc::new(AtomicBool::new(false));
    let (failed, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (stop, failed, done) = (stop.clone(), failed.clone(), done.clone());
        let base = rt.url("caps");
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let fails = lifecycle(&base, &format!("load-{worker}-{n}")).await;
                failed.fetch_add(fails, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("http://{}/admin/keys/rotate", rt.server().addr);
    let rotated = rt
        .client()
        .post(url)
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    let new = rotated["primary"].as_str().unwrap().to_string();
    assert_ne!(new, old);

    // The reseal moves every value to the new key; the old key is retired once none uses it.
    let status = resealed_and_retired(&rt).await;
    assert_eq!(status["primary"], new.as_str());
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) >= 4, "the load ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert_eq!(
        not_under(&rt, &new).await,
        0,
        "every value is under the new key"
    );
    let keys_left = rt.state_count("SELECT COUNT(*) AS n FROM data_keys").await;
    assert_eq!(keys_left, 1);

    // Without the old key, a restart reads everything back.
    rt.restart().await.unwrap();
    let fetched = rt
        .osb(
            Method::GET,
            "caps",
            &binding_path("kept-3", "kept-3-b"),
            None,
        )
        .await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["credentials"]["stored"]["password"], "kept-3");
    let audited =
        "SELECT COUNT(*) AS n FROM audit WHERE action = 'rotate-key' AND actor = 'operator'";
    assert_eq!(rt.state_count(audited).await, 1, "the rotation is audited");
}

#[tokio::test]
async fn a_clear_text_database_from_before_encryption_is_sealed_on_upgrade() {
    let mut rt = TestRuntime::start(&[("caps", guests::CAPABILITY_BROKER, &caps())])
        .await
        .unwrap();
    for i in 0..3 {
        let id = format!("old-{i}");
        let path = format!("/v2/service_instances/{id}");
        let made = rt
            .osb(Method::PUT, "caps", &path, Some(provision_body(&id)))
            .await;
        assert_eq!(made.status, StatusCode::CREATED);
        let bound = rt
            .osb(
                Method::PUT,
                "caps",
                &binding_path(&id, &format!("{id}-b")),
                Some(bind_body()),
            )
            .await;
        assert_eq!(bound.status, StatusCode::CREATED);
    }
    rt.stop().await.unwrap();
    // The database as the release before encryption left it: schema 0009, values in clear
    // text, no keyring.
    let kv_value = if rt.on_postgres() {
        "convert_to(CAST(json_build_object('password', instance_id, 'region', 'eu') AS TEXT), 'UTF8')"
    } else {
        "CAST(json_object('password', instance_id, 'region', 'eu') AS BLOB)"
    };
    let kv_value = kv_value.replace("instance_id", "substr(key, 10)");
    rt.state_execute(&format!(
        "UPDATE instances SET attributes = '{{}}', context = NULL, dashboard_url = NULL, \
             parameters = '{{\"password\": \"' || instance_id || '\", \"region\": \"eu\"}}';
         UPDATE bindings SET attributes = '{{}}', \
             result = '{{\"credentials\": {{\"stored\": {{\"password\": \"' || instance_id || '\"}}}}}}';
         UPDATE operations SET request = NULL, guest_data = NULL;
         UPDATE kv SET value = {kv_value};
         DROP TABLE data_keys;
         DELETE FROM _sqlx_migrations WHERE version = 10;"
    ))
    .await;
    assert_eq!(
        not_under(&rt, "").await,
        3 * 2 + 3 * 2 + 3,
        "clear text to seal"
    );
    std::fs::remove_file(rt.dir.path().join("data/keyring.toml")).unwrap();
    // The kept manifests too, as that release wrote them.
    for file in kept_manifests(&rt) {
        std::fs::write(file, caps()).unwrap();
    }

    rt.restart().await.unwrap();
    // Everything reads back at once (clear values pass), and is sealed in the background.
    for i in 0..3 {
        let id = format!("old-{i}");
        let fetched = rt
            .osb(
                Method::GET,
                "caps",
                &binding_path(&id, &format!("{id}-b")),
                None,
            )
            .await;
        assert_eq!(fetched.status, StatusCode::OK);
        assert_eq!(
            fetched.body["credentials"]["stored"]["password"],
            id.as_str()
        );
    }
    let started = Instant::now();
    while not_under(&rt, "").await > 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "not sealed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for file in kept_manifests(&rt) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!holds(&bytes, GREETING), "{} is not sealed", file.display());
    }
    rt.restart().await.unwrap();
    for i in 0..3 {
        let id = format!("old-{i}");
        let instance = format!("/v2/service_instances/{id}");
        let fetched = rt.osb(Method::GET, "caps", &instance, None).await;
        assert_eq!(fetched.body["parameters"], json!({ "region": "eu" }));
        // The kv value the guest stored reads back through a new binding's credentials.
        let bound = rt
            .osb(
                Method::PUT,
                "caps",
                &binding_path(&id, &format!("{id}-c")),
                Some(bind_body()),
            )
            .await;
        assert_eq!(bound.status, StatusCode::CREATED, "{:?}", bound.body);
        assert_eq!(bound.body["credentials"]["stored"]["password"], id.as_str());
    }
}

#[tokio::test]
async fn replicas_on_postgresql_share_the_data_keys_and_a_rotation_reaches_each() {
    let first = TestRuntime::start_with(&[("caps", guests::CAPABILITY_BROKER, &caps())], |c| {
        c.runtime_config = admin_config();
    })
    .await
    .unwrap();
    let Some(url) = first.state_url().map(str::to_string) else {
        return; // Replicas share a PostgreSQL database: the suite's PostgreSQL run covers it.
    };
    let keyring = first.dir.path().join("data/keyring.toml");
    let (shared, ring) = (url.clone(), keyring.clone());
    let second =
        TestRuntime::start_with(&[("caps", guests::CAPABILITY_BROKER, &caps())], move |c| {
            c.state_url = Some(shared.clone());
            c.keyring = Some(ring.clone());
        })
        .await
        .unwrap();
    assert_eq!(provision(&first, "r-1").await, StatusCode::CREATED);
    assert_eq!(region(&second, "r-1").await, "eu");

    let rotate = format!("http://{}/admin/keys/rotate", first.server().addr);
    let rotated: Value = (first
        .client()
        .post(rotate)
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap())
    .json()
    .await
    .unwrap();
    let new = rotated["primary"].as_str().unwrap().to_string();
    // Sealed with a key the other replica has not loaded yet: it loads it on the read.
    assert_eq!(provision(&first, "r-2").await, StatusCode::CREATED);
    assert_eq!(region(&second, "r-2").await, "eu");
    assert_eq!(provision(&second, "r-3").await, StatusCode::CREATED);
    resealed_and_retired(&first).await;
    // The second replica writes with the new key too, and reads everything.
    assert_eq!(provision(&second, "r-4").await, StatusCode::CREATED);
    assert_eq!(not_under(&first, &new).await, 0);
    for id in ["r-1", "r-2", "r-3", "r-4"] {
        assert_eq!(region(&second, id).await, "eu", "{id}");
        assert_eq!(region(&first, id).await, "eu", "{id}");
    }
}

async fn provision(rt: &TestRuntime, id: &str) -> StatusCode {
    let path = format!("/v2/service_instances/{id}");
    rt.osb(Method::PUT, "caps", &path, Some(provision_body(id)))
        .await
        .status
}

async fn region(rt: &TestRuntime, id: &str) -> Value {
    let path = format!("/v2/service_instances/{id}");
    rt.osb(Method::GET, "caps", &path, None).await.body["parameters"]["region"].clone()
}
