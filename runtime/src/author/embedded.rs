//! What the binary carries for authors, so `brokerbox new` and `build` work from any directory:
//! the project templates, the WIT contract, the Python and JavaScript SDKs and the pinned
//! lock files of their tools. The tools themselves are installed on first use into the tools
//! dir (`BROKERBOX_TOOLS_DIR`, else `~/.cache/brokerbox/tools`), and again only when a lock
//! file changes.

use anyhow::{bail, Context};
use include_dir::{include_dir, Dir};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `runtime/templates`: one directory per language, plus the shared manifest and README.
pub static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");
/// The WIT contract (`wit/`), with its WASI dependencies.
static WIT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../wit");
/// The Python SDK package `brokerbox`.
static PYTHON_SDK: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../guest-sdk/python/brokerbox");
/// componentize-py, pinned with hashes.
const PYTHON_REQUIREMENTS: &str = include_str!("../../../guest-sdk/python/requirements.txt");
/// The JavaScript SDK module `brokerbox`.
const JS_SDK: &str = include_str!("../../../guest-sdk/js/brokerbox.js");
/// The JavaScript build tools: package.json, its lock file, and the build script.
const JS_PACKAGE: &str = include_str!("../../../guest-sdk/js/tools/package.json");
const JS_LOCK: &str = include_str!("../../../guest-sdk/js/tools/package-lock.json");
const JS_BUILD: &str = include_str!("../../../guest-sdk/js/tools/build.mjs");

/// Where the tools and the SDK files are kept.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BROKERBOX_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("brokerbox").join("tools")
}

fn sha256(parts: &[&str]) -> String {
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The files the binary carries (WIT, SDKs), written once per content under the tools dir:
/// returns `(wit dir, python sdk dir (holding the package), js sdk file)`.
pub fn sdk_files() -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let mut hash = sha2::Sha256::new();
    for dir in [&WIT, &PYTHON_SDK] {
        for file in all_files(dir) {
            hash.update(file.path().to_string_lossy().as_bytes());
            hash.update(file.contents());
        }
    }
    hash.update(JS_SDK.as_bytes());
    let key: String = hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = tools_dir().join("sdk").join(key);
    let (wit, python, js) = (
        root.join("wit"),
        root.join("python"),
        root.join("js").join("brokerbox.js"),
    );
    if !root.join(".complete").is_file() {
        let staging = tools_dir()
            .join("sdk")
            .join(format!(".staging-{}", uuid::Uuid::new_v4()));
        write_dir(&WIT, &staging.join("wit"))?;
        write_dir(&PYTHON_SDK, &staging.join("python").join("brokerbox"))?;
        std::fs::create_dir_all(staging.join("js"))?;
        std::fs::write(staging.join("js").join("brokerbox.js"), JS_SDK)?;
        std::fs::write(staging.join(".complete"), "")?;
        // Another build may have written the same files meanwhile: either copy will do.
        if std::fs::rename(&staging, &root).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    Ok((wit, python, js))
}

fn all_files<'a>(dir: &'a Dir<'a>) -> Vec<&'a include_dir::File<'a>> {
    let mut files: Vec<_> = dir.files().collect();
    for sub in dir.dirs() {
        files.extend(all_files(sub));
    }
    files
}

/// Writes the embedded `dir` to `to` (its paths are relative to the embedded root).
fn write_dir(dir: &Dir<'_>, to: &Path) -> anyhow::Result<()> {
    for file in all_files(dir) {
        let relative = file.path().strip_prefix(dir.path()).unwrap_or(file.path());
        let path = to.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, file.contents())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Runs `install` under the tools dir's lock unless `dir/.stamp` already holds `stamp` (the
/// hash of the lock files, as `scripts/guest-tools` writes it, so both share one install).
fn installed(
    dir: &Path,
    stamp: &str,
    install: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let stamp_file = dir.join(".stamp");
    let current = || std::fs::read_to_string(&stamp_file).is_ok_and(|s| s.trim() == stamp);
    if current() {
        return Ok(());
    }
    std::fs::create_dir_all(tools_dir())?;
    let lock = std::fs::File::create(tools_dir().join(".install.lock"))?;
    lock.lock()?;
    if current() {
        return Ok(());
    }
    install()?;
    std::fs::write(&stamp_file, format!("{stamp}\n"))?;
    Ok(())
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The pinned componentize-py, installed on first use: the path of its executable.
///
/// # Errors
/// No `python3` on the machine, or the install failed.
pub fn componentize_py() -> anyhow::Result<PathBuf> {
    let dir = tools_dir().join("python");
    installed(&dir, &sha256(&[PYTHON_REQUIREMENTS]), || {
        eprintln!("installing componentize-py (pinned) into {}", dir.display());
        let _ = std::fs::remove_dir_all(&dir);
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&dir),
            "python3 -m venv (Python brokers need python3 with venv)",
        )?;
        let requirements = tools_dir().join("python-requirements.txt");
        std::fs::write(&requirements, PYTHON_REQUIREMENTS)?;
        run(
            Command::new(dir.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg("--require-hashes")
                .arg("-r")
                .arg(&requirements),
            "pip install componentize-py",
        )
    })?;
    Ok(dir.join("bin").join("componentize-py"))
}

/// The pinned JavaScript build tools (componentize-js, rolldown), installed on first use: the
/// directory holding `build.mjs` and its `node_modules`.
///
/// # Errors
/// No `node`/`npm` on the machine, or the install failed.
pub fn js_tools() -> anyhow::Result<PathBuf> {
    let dir = tools_dir().join("js");
    installed(&dir, &sha256(&[JS_LOCK, JS_BUILD]), || {
        eprintln!("installing componentize-js (pinned) into {}", dir.display());
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("package.json"), JS_PACKAGE)?;
        std::fs::write(dir.join("package-lock.json"), JS_LOCK)?;
        std::fs::write(dir.join("build.mjs"), JS_BUILD)?;
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
            "npm ci (JavaScript brokers need node and npm)",
        )
    })?;
    Ok(dir)
}
