//! `brokerbox check` against the example brokers, over real HTTP: it must find 0 failures.

use brokerbox_tests::{guests, manifest, repo_root, TestRuntime};

#[tokio::test]
async fn check_reports_no_failure_for_the_examples() {
    let rt = TestRuntime::examples().await.unwrap();
    for name in ["file-broker", "slow-broker"] {
        assert_check_passes(&rt, name, 25).await;
    }
}

/// Runs `brokerbox check` against broker `name` of `rt` (credentials `NAME`/`NAME-secret`),
/// with the `[[examples]]` of `examples/NAME/NAME.toml`, and asserts it found no failure in at
/// least `cases` cases, every example's whole life cycle among them.
pub(crate) async fn assert_check_passes(rt: &TestRuntime, name: &str, cases: usize) {
    let manifest = repo_root().join(format!("examples/{name}/{name}.toml"));
    let examples = brokerbox::manifest::Manifest::load(&manifest)
        .unwrap()
        .examples;
    assert!(!examples.is_empty(), "{name} ships no [[examples]]");
    let report = brokerbox::check::run(&rt.url(name), name, &format!("{name}-secret"), &examples)
        .await
        .unwrap();
    let rendered = report.render();
    for example in &examples {
        for step in [
            "provision",
            "bind",
            "credentials match the schema",
            "unbind",
            "deprovision",
        ] {
            let case = format!("example {}: {step}", example.name);
            assert!(
                report.cases.iter().any(|c| c.name == case && c.passed),
                "{name}: no passed case {case:?}:\n{rendered}"
            );
        }
    }
    assert_eq!(report.failed(), 0, "{name}:\n{rendered}");
    assert!(
        report.passed() >= cases,
        "{name} ran too few cases:\n{rendered}"
    );
    assert!(rendered.ends_with(&format!("{} passed, 0 failed\n", report.passed())));
}

#[tokio::test]
async fn check_passes_on_a_broker_with_schemas_maintenance_info_and_required_apps() {
    let rt = TestRuntime::start(&[("rules", guests::RULES_BROKER, &manifest("rules", ""))])
        .await
        .unwrap();
    let report = brokerbox::check::run(&rt.url("rules"), "rules", "rules-secret", &[])
        .await
        .unwrap();
    assert_eq!(report.failed(), 0, "{}", report.render());
    let names: Vec<_> = report.cases.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"update: plan change on a plan that is not plan_updateable → 422"));
    assert!(names
        .contains(&"provision: foreign maintenance_info.version → 422 MaintenanceInfoConflict"));
}

#[tokio::test]
async fn an_example_whose_credentials_break_its_schema_or_whose_plan_is_missing_fails() {
    let rt = TestRuntime::examples().await.unwrap();
    let examples = brokerbox::manifest::Manifest::parse(
        r#"
[credentials]
username = "u"
password = "p"

[[examples]]
name = "wants a password"
plan = "small"
credentials_schema = { type = "object", required = ["password"] }

[[examples]]
name = "no such plan"
plan = "huge"
"#,
    )
    .unwrap()
    .examples;
    let report = brokerbox::check::run(
        &rt.url("file-broker"),
        "file-broker",
        "file-broker-secret",
        &examples,
    )
    .await
    .unwrap();
    let rendered = report.render();
    let failed: Vec<_> = report.cases.iter().filter(|c| !c.passed).collect();
    assert_eq!(failed.len(), 2, "{rendered}");
    assert_eq!(
        failed[0].name, "example wants a password: credentials match the schema",
        "{rendered}"
    );
    assert!(failed[0].detail.contains("password"), "{rendered}");
    assert!(failed[1].detail.contains("no plan \"huge\""), "{rendered}");
    // The failing example still cleaned up after itself: its unbind and deprovision passed.
    for step in ["unbind", "deprovision"] {
        let case = format!("example wants a password: {step}");
        assert!(
            report.cases.iter().any(|c| c.name == case && c.passed),
            "{rendered}"
        );
    }
}

#[tokio::test]
async fn check_finds_a_broken_broker() {
    // A "broker" that answers 200 with an empty object to everything.
    let app = axum_like_server().await;
    let report = brokerbox::check::run(&app, "u", "p", &[]).await;
    assert!(report.is_err() || report.unwrap().failed() > 0);
}

/// Serves `{}` with 200 to every request on a loopback port; returns its URL.
async fn axum_like_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Runs the `brokerbox` binary with `args`; its exit success and its stderr.
fn brokerbox(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(crate::process::BINARY)
        .args(args)
        .env_remove("BROKERBOX_TOKEN")
        .env_remove("BROKERBOX_URL")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test]
async fn check_and_admin_say_what_actually_happened() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = dir.path().join("brokers");
    std::fs::create_dir_all(&brokers).unwrap();
    std::fs::copy(guests::RULES_BROKER, brokers.join("rules.wasm")).unwrap();
    std::fs::write(brokers.join("rules.toml"), manifest("rules", "")).unwrap();
    let config = dir.path().join("runtime.toml");
    std::fs::write(
        &config,
        "[admin]\noperator_token = \"operator-token-0123456789\"\n",
    )
    .unwrap();
    let state = crate::process::state_url().await;
    let with_admin = crate::process::RuntimeProcess::start(
        &dir.path().join("data"),
        &brokers,
        state.clone(),
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let url = with_admin.url("rules");

    // check: a wrong password is a 401, a URL ending in /v2 a 404; both exit non-zero.
    let (ok, _, err) = brokerbox(&["check", &url, "--user", "rules", "--password", "wrong"]);
    assert!(!ok && err.contains("401 Unauthorized"), "{err}");
    let (ok, _, err) = brokerbox(&[
        "check",
        &format!("{url}/v2"),
        "--user",
        "rules",
        "--password",
        "rules-secret",
    ]);
    assert!(
        !ok && err.contains("404 Not Found") && err.contains("/v2"),
        "{err}"
    );

    // admin: flags after the subcommand, plain JSON.
    let base = format!("http://{}", with_admin.addr);
    let (ok, out, err) = brokerbox(&[
        "admin",
        "list",
        "--url",
        &base,
        "--token",
        "operator-token-0123456789",
    ]);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["brokers"][0]["name"], "rules", "{out}");
    assert!(!out.contains("(\\\""), "no Rust debug strings: {out}");
    // A wrong token is named as such.
    let (ok, _, err) = brokerbox(&["admin", "list", "--url", &base, "--token", "not-a-token"]);
    assert!(
        !ok && err.contains("401") && err.contains("admin token"),
        "{err}"
    );
    // No token at all.
    let (ok, _, err) = brokerbox(&["admin", "list", "--url", &base]);
    assert!(!ok && err.contains("--token"), "{err}");

    // A runtime without an [admin] table says the admin API is disabled.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = crate::process::RuntimeProcess::start(
        &plain_dir.path().join("data"),
        &brokers,
        crate::process::state_url().await,
        &[],
    )
    .await;
    let (ok, _, err) = brokerbox(&[
        "admin",
        "--url",
        &format!("http://{}", plain.addr),
        "--token",
        "operator-token-0123456789",
        "list",
    ]);
    assert!(!ok && err.contains("admin API is disabled"), "{err}");

    // Nothing listening: said so.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (ok, _, err) = brokerbox(&[
        "admin",
        "--url",
        &format!("http://{closed}"),
        "--token",
        "operator-token-0123456789",
        "list",
    ]);
    assert!(!ok && err.contains("cannot reach the runtime"), "{err}");
}
