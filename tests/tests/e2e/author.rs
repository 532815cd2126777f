//! The author's loop, driven through the real `brokerbox` command: `new` → `build` →
//! `validate` → served → `check --examples` in every language, `dev` reloading on save, and
//! build mistakes explained.
//!
//! The tools share what the suite already has: the pinned Python and JavaScript toolchains in
//! `target/tools` (installed by the guests' build), Rust dependencies in `target/guests`.
//! These tests do not touch the state store's backend, so the PostgreSQL pass skips them.

use crate::process::BINARY;
use brokerbox_tests::{postgres, repo_root, TestRuntime};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The `brokerbox` command, run in `dir` with the suite's shared tools.
fn brokerbox(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(dir)
        .env("BROKERBOX_TOOLS_DIR", repo_root().join("target/tools"))
        .env("CARGO_TARGET_DIR", repo_root().join("target/guests"))
        .env("RUST_BACKTRACE", "0")
        .kill_on_drop(true);
    command
}

/// Runs `brokerbox ARGS` in `dir`; returns its output, stdout and stderr joined.
async fn run(dir: &Path, args: &[&str]) -> (Output, String) {
    let output = brokerbox(dir).args(args).output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// Runs `brokerbox ARGS` in `dir` and asserts it succeeded; returns what it printed.
async fn ok(dir: &Path, args: &[&str]) -> String {
    let (output, text) = run(dir, args).await;
    assert!(
        output.status.success(),
        "brokerbox {args:?} failed:\n{text}"
    );
    text
}

fn skipped_on_postgres(test: &str) -> bool {
    let skip = postgres::suite_on_postgres();
    if skip {
        eprintln!("{test}: skipped on the PostgreSQL pass (the SQLite pass runs it; the author's tools use no state store)");
    }
    skip
}

/// A project made by `brokerbox new NAME --lang LANG` in `parent`.
async fn new_project(parent: &Path, name: &str, lang: &str) -> PathBuf {
    let text = ok(parent, &["new", name, "--lang", lang]).await;
    assert!(text.contains(&format!("made {name}")), "{text}");
    parent.join(name)
}

fn password_of(manifest: &Path) -> String {
    brokerbox::manifest::Manifest::load(manifest)
        .unwrap()
        .credentials
        .password
        .unwrap()
}

#[tokio::test]
async fn new_build_validate_and_check_examples_pass_in_every_language() {
    if skipped_on_postgres("new_build_validate_and_check_examples") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut built = Vec::new();
    for lang in ["rust", "python", "js"] {
        let name = format!("new-{lang}");
        let project = new_project(dir.path(), &name, lang).await;
        let text = ok(&project, &["build"]).await;
        assert!(text.contains(&format!("{name} (version ")), "{text}");
        assert!(text.contains("plans standard"), "{text}");
        assert!(text.contains("1 example(s)"), "{text}");
        let wasm = project.join(format!("build/{name}.wasm"));
        assert!(project.join(format!("build/{name}.toml")).is_file());
        let text = ok(&project, &["validate", &format!("build/{name}.wasm")]).await;
        assert!(text.contains("is valid"), "{text}");
        built.push((name, wasm, project));
    }
    let brokers: Vec<(String, String, String)> = built
        .iter()
        .map(|(name, wasm, project)| {
            let manifest = std::fs::read_to_string(project.join(format!("{name}.toml"))).unwrap();
            (name.clone(), wasm.display().to_string(), manifest)
        })
        .collect();
    let brokers: Vec<(&str, &str, &str)> = brokers
        .iter()
        .map(|(n, w, m)| (n.as_str(), w.as_str(), m.as_str()))
        .collect();
    // The artifacts `build` compiled while validating: nothing compiles twice.
    let rt = TestRuntime::start_with(&brokers, |config| {
        config.artifacts_dir = Some(repo_root().join("target/tools/artifacts"));
    })
    .await
    .unwrap();
    for (name, _, project) in &built {
        let manifest = project.join(format!("{name}.toml"));
        let password = password_of(&manifest);
        let (output, text) = run(
            project,
            &[
                "check",
                &rt.url(name),
                "--user",
                name,
                "--password",
                &password,
                "--examples",
                manifest.to_str().unwrap(),
            ],
        )
        .await;
        assert!(output.status.success(), "{name}:\n{text}");
        assert!(
            text.contains("PASS  example standard: credentials match the schema"),
            "{name}:\n{text}"
        );
        assert!(
            text.contains("PASS  example standard: deprovision"),
            "{name}:\n{text}"
        );
        assert!(text.contains(" passed, 0 failed"), "{name}:\n{text}");
    }
}

#[tokio::test]
async fn build_says_how_to_fix_a_crate_without_cdylib_and_one_without_export() {
    if skipped_on_postgres("build_says_how_to_fix") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let project = new_project(dir.path(), "no-cdylib", "rust").await;
    let cargo = project.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo).unwrap();
    std::fs::write(&cargo, text.replace("crate-type = [\"cdylib\"]", "")).unwrap();
    let (output, text) = run(&project, &["build"]).await;
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("cargo built no .wasm"), "{text}");
    assert!(text.contains("crate-type = [\"cdylib\"]"), "{text}");
    assert!(!project.join("build/no-cdylib.wasm").exists());

    let project = new_project(dir.path(), "no-export", "rust").await;
    let lib = project.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, text.replace("export_broker!(NoExportBroker);", "")).unwrap();
    let (output, text) = run(&project, &["build"]).await;
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(
            "the component exports no broker: end src/lib.rs with `export_broker!(YourBroker);`"
        ),
        "{text}"
    );
    assert!(!project.join("build/no-export.wasm").exists());

    // Not a project at all.
    let (output, text) = run(dir.path(), &["build"]).await;
    assert!(!output.status.success());
    assert!(text.contains("is not a broker project"), "{text}");
}

#[tokio::test]
async fn validate_gives_the_runtimes_reasons() {
    if skipped_on_postgres("validate_gives_the_runtimes_reasons") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("file-broker.wasm");
    std::fs::copy(brokerbox_tests::guests::FILE_BROKER, &wasm).unwrap();
    let shipped = repo_root().join("examples/file-broker/file-broker.toml");
    std::fs::copy(&shipped, dir.path().join("file-broker.toml")).unwrap();
    let text = ok(dir.path(), &["validate", "file-broker.wasm"]).await;
    assert!(
        text.contains("service file-service: plans small, large"),
        "{text}"
    );
    assert!(text.contains("2 example(s)"), "{text}");

    // A core module (built for the wrong target) is not a component.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::copy(&shipped, dir.path().join("core.toml")).unwrap();
    let (output, text) = run(dir.path(), &["validate", "core.wasm"]).await;
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("not a component: build for the wasm32-wasip2 target"),
        "{text}"
    );

    let manifest = std::fs::read_to_string(&shipped).unwrap();
    let broken = [
        (
            "[[examples]]\nname = \"x\"\nplan = \"huge\"\n",
            "no plan \"huge\" in the catalog",
        ),
        ("[limits]\nmemory_mib = 0\n", "memory_mib"),
        ("[grants]\nnetwork = true\n", "unknown field `network`"),
    ];
    for (extra, reason) in broken {
        let path = dir.path().join("broken.toml");
        let text = if extra.starts_with("[[") {
            format!("{manifest}\n{extra}")
        } else {
            format!("[credentials]\nusername = \"u\"\npassword = \"p\"\n{extra}")
        };
        std::fs::write(&path, text).unwrap();
        let (output, text) =
            run(dir.path(), &["validate", "file-broker.wasm", "broken.toml"]).await;
        assert!(!output.status.success(), "{extra}: {text}");
        assert!(
            text.contains(reason),
            "{extra}: want {reason:?} in:\n{text}"
        );
    }
}

/// Lines a child writes to stderr, kept as they arrive.
fn collect_stderr(child: &mut tokio::process::Child) -> Arc<Mutex<String>> {
    use tokio::io::AsyncBufReadExt;
    let log = Arc::new(Mutex::new(String::new()));
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

/// Waits until `check` holds, up to `limit`; panics with `what` and the log otherwise.
async fn wait_for<F, Fut>(limit: Duration, what: &str, log: &Mutex<String>, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}; dev's output:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn dev_reloads_after_an_edit_and_keeps_serving_after_a_broken_one() {
    if skipped_on_postgres("dev_reloads_after_an_edit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let project = new_project(dir.path(), "devloop", "rust").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = brokerbox(&project)
        .args(["dev", "--listen", &listen])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect_stderr(&mut child);
    let password = password_of(&project.join("devloop.toml"));
    let client = reqwest::Client::new();
    let plans = || async {
        let answer = client
            .get(format!("http://{listen}/brokers/devloop/v2/catalog"))
            .basic_auth("devloop", Some(&password))
            .header("X-Broker-API-Version", "2.17")
            .send()
            .await;
        match answer {
            Ok(r) if r.status() == 200 => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                body["services"][0]["plans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            }
            _ => Vec::new(),
        }
    };
    let limit = Duration::from_secs(240);
    wait_for(limit, "serving the first build", &log, || async {
        plans().await == ["standard"]
    })
    .await;
    let printed = log.lock().unwrap().clone();
    assert!(
        printed.contains(&format!(
            "cf create-service-broker devloop devloop {password} http://{listen}/brokers/devloop"
        )),
        "{printed}"
    );

    // An edit that adds a plan: rebuilt and reloaded.
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let edited = source.replace(
        ".plan(plan);",
        ".plan(plan)\n            .plan(Plan::new(\"devloop-extra\", \"extra\", \"An extra plan\"));",
    );
    assert_ne!(edited, source);
    std::fs::write(&lib, &edited).unwrap();
    wait_for(limit, "the new plan served", &log, || async {
        plans().await == ["standard", "extra"]
    })
    .await;

    // An edit that does not compile: the error is printed, the last good version serves on.
    std::fs::write(&lib, format!("{edited}\nfn broken(\n")).unwrap();
    wait_for(limit, "the failed build reported", &log, || async {
        log.lock()
            .unwrap()
            .contains("the build failed, the last good version keeps serving")
    })
    .await;
    assert_eq!(plans().await, ["standard", "extra"]);
    child.kill().await.unwrap();
}
