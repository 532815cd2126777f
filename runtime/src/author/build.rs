//! `brokerbox build`: one recipe per language turns the project's source into a component
//! (`build/NAME.wasm`, the manifest copied beside it as `build/NAME.toml`), then the runtime's
//! own checks run on it ([`super::validate`]). A mistake comes back as a sentence that says how
//! to fix it.

use super::embedded;
use super::{Lang, Project};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Builds `project`; returns the validated result.
///
/// # Errors
/// The tool's failure (its own output is passed through), a Rust crate that is not a
/// `cdylib`, or a check the component fails.
pub async fn build(project: &Project) -> anyhow::Result<super::validate::Valid> {
    let out = project.out_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let wasm = project.wasm();
    let staged = out.join(format!(".{}.wasm.tmp", project.name));
    let project_for_tool = project.clone();
    let staged_for_tool = staged.clone();
    tokio::task::spawn_blocking(move || match project_for_tool.lang {
        Lang::Rust => rust(&project_for_tool, &staged_for_tool),
        Lang::Python => python(&project_for_tool, &staged_for_tool),
        Lang::Js => js(&project_for_tool, &staged_for_tool),
    })
    .await??;
    // Checked before it replaces the last good build: `dev` keeps serving that one.
    let manifest = project.manifest();
    let valid =
        super::validate::validate(&staged, &manifest, Some(&project.name), Some(project.lang))
            .await;
    let valid = match valid {
        Ok(valid) => valid,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    std::fs::copy(&manifest, out.join(format!("{}.toml", project.name)))
        .with_context(|| format!("cannot copy {}", manifest.display()))?;
    std::fs::rename(&staged, &wasm)?;
    Ok(valid)
}

/// Runs `command`, passing its output through; a failure names `what` and `fix`.
fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); its messages are above");
    }
    Ok(())
}

/// Rust: `cargo build --release --target wasm32-wasip2`, then the crate's `.wasm` (cargo says
/// where it wrote it; a crate that is not a `cdylib` writes none).
fn rust(project: &Project, to: &Path) -> anyhow::Result<()> {
    if Command::new("rustup").arg("--version").output().is_ok() {
        // Quietly, and only once per machine: rustup answers at once when the target is there.
        let _ = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let manifest_path = project.dir.join("Cargo.toml");
    let output = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest_path)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo (Rust brokers need cargo and rustup)")?;
    if !output.status.success() {
        bail!("cargo build failed; its messages are above");
    }
    let artifacts = crate_artifacts(&output.stdout, &manifest_path)?;
    let Some(kinds) = artifacts.kinds else {
        bail!(
            "the crate has no library: a broker is a library crate (src/lib.rs) built as a \
             cdylib; add src/lib.rs and, in Cargo.toml, [lib] crate-type = [\"cdylib\"]"
        );
    };
    let Some(wasm) = artifacts.wasm else {
        bail!(
            "cargo built no .wasm: the library's crate-type is {kinds:?}, not cdylib. Add to \
             Cargo.toml:\n\n[lib]\ncrate-type = [\"cdylib\"]\n"
        );
    };
    std::fs::copy(&wasm, to).with_context(|| format!("cannot copy {}", wasm.display()))?;
    Ok(())
}

/// What cargo built of the project's own library.
struct LibArtifacts {
    /// The library target's crate types, when it has a library.
    kinds: Option<Vec<String>>,
    /// The `.wasm` file, when one of them is a `cdylib`.
    wasm: Option<PathBuf>,
}

/// Reads cargo's JSON messages for the library of the package at `manifest_path`.
fn crate_artifacts(stdout: &[u8], manifest_path: &Path) -> anyhow::Result<LibArtifacts> {
    let manifest_path = manifest_path.canonicalize()?;
    let mut found = LibArtifacts {
        kinds: None,
        wasm: None,
    };
    for line in stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let ours = message["manifest_path"]
            .as_str()
            .and_then(|p| Path::new(p).canonicalize().ok())
            .is_some_and(|p| p == manifest_path);
        if message["reason"] != "compiler-artifact" || !ours {
            continue;
        }
        let kinds: Vec<String> = message["target"]["kind"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        if kinds.iter().any(|k| k.ends_with("lib")) {
            found.wasm = message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from);
            found.kinds = Some(kinds);
        }
    }
    Ok(found)
}

/// Python: componentize-py against the `broker-http` world, with the SDK on the path.
fn python(project: &Project, to: &Path) -> anyhow::Result<()> {
    let tool = embedded::componentize_py()?;
    let (wit, python_sdk, _) = embedded::sdk_files()?;
    run(
        Command::new(tool)
            .arg("-d")
            .arg(&wit)
            .args(["-w", "broker-http", "componentize", "-p"])
            .arg(&python_sdk)
            .arg("-p")
            .arg(&project.dir)
            .arg("app")
            .arg("-o")
            .arg(to)
            .current_dir(&project.dir)
            .stdout(Stdio::null()),
        "componentize-py (app.py)",
    )
}

/// JavaScript: the pinned componentize-js, with the SDK as the `brokerbox` module.
fn js(project: &Project, to: &Path) -> anyhow::Result<()> {
    let tools = embedded::js_tools()?;
    let (wit, _, js_sdk) = embedded::sdk_files()?;
    run(
        Command::new("node")
            .arg("build.mjs")
            .arg(project.dir.join("app.js"))
            .arg(to)
            .arg(&wit)
            .arg(&js_sdk)
            .current_dir(&tools),
        "componentize-js (app.js)",
    )
}
