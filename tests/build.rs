//! Builds the guest components (the examples and the test-only guests) for wasm32-wasip2, in
//! Rust with cargo and in Python and JavaScript with `scripts/build-guests` (which installs the
//! pinned toolchains under `target/tools`), and writes their paths as constants, so tests never
//! hard-code `target/` paths.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Python and JavaScript guests: `(language, name)`, built from `examples/NAME/app.*` or
/// `tests/guests/NAME/app.*` into `target/guests/LANGUAGE/NAME.wasm`.
const POLYGLOT: [(&str, &str); 4] = [
    ("python", "python-file-broker"),
    ("python", "python-rules"),
    ("js", "js-kv-broker"),
    ("js", "js-rules"),
];

const GUESTS: [&str; 6] = [
    "file-broker",
    "slow-broker",
    "trap-broker",
    "rules-broker",
    "hostile-broker",
    "capability-broker",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let examples = root.join("examples");
    for watched in [
        "examples/Cargo.toml",
        "examples/Cargo.lock",
        "examples/file-broker",
        "examples/slow-broker",
        "tests/guests",
        "guest-sdk/rust/src",
        "guest-sdk/rust/wit",
        "guest-sdk/rust/Cargo.toml",
        "guest-sdk/python",
        "guest-sdk/js",
        "examples/python-file-broker",
        "examples/js-kv-broker",
        "scripts/build-guests",
        "scripts/guest-tools",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    // The guests' own target dir beside the host's, shared with scripts/demo.
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(examples.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Host build settings must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("cannot run cargo to build the guests");
    assert!(
        status.success(),
        "building the guest components failed; is the target installed? run `rustup target add wasm32-wasip2`"
    );
    let mut constants = String::new();
    for guest in GUESTS {
        let wasm = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", guest.replace('-', "_")));
        assert!(
            wasm.exists(),
            "guest {} was not built at {}",
            guest,
            wasm.display()
        );
        let name = guest.replace('-', "_").to_uppercase();
        constants.push_str(&format!(
            "/// The `{guest}` component.\npub const {name}: &str = {:?};\n",
            wasm.display().to_string()
        ));
    }
    let status = Command::new(root.join("scripts/build-guests"))
        .args(["python", "js"])
        .current_dir(&root)
        .status()
        .expect("cannot run scripts/build-guests");
    assert!(
        status.success(),
        "building the Python and JavaScript guests failed (they need python3 and node/npm; \
         scripts/build-guests python js says why)"
    );
    for (language, guest) in POLYGLOT {
        let wasm = root
            .join("target/guests")
            .join(language)
            .join(format!("{guest}.wasm"));
        assert!(
            wasm.exists(),
            "guest {guest} was not built at {}",
            wasm.display()
        );
        let name = guest.replace('-', "_").to_uppercase();
        constants.push_str(&format!(
            "/// The `{guest}` component ({language}).\npub const {name}: &str = {:?};\n",
            wasm.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    write_if_changed(&out, &constants);
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).unwrap();
    }
}
