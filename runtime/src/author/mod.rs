//! The author's loop: `brokerbox new` (a ready project from a template), `build` (the pinned
//! tool of the project's language, then the runtime's own checks), `validate` (those checks
//! alone, offline) and `dev` (build, serve, rebuild and reload on every save).
//!
//! A language is one [`Lang`] variant: a template under `runtime/templates/LANG/` and a build
//! recipe in [`build`]. A project is a directory holding the broker's source and its manifest
//! `NAME.toml`; its build writes `build/NAME.wasm` and `build/NAME.toml`.

pub mod build;
pub mod dev;
mod embedded;
pub mod new;
pub mod validate;

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// A language a broker can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the `brokerbox-sdk` crate (cargo, target wasm32-wasip2).
    Rust,
    /// Python, with the `brokerbox` package (componentize-py).
    Python,
    /// JavaScript, with the `brokerbox` module (componentize-js).
    Js,
}

impl Lang {
    /// The file whose presence marks a project of this language.
    pub fn marker(self) -> &'static str {
        match self {
            Lang::Rust => "Cargo.toml",
            Lang::Python => "app.py",
            Lang::Js => "app.js",
        }
    }

    /// The broker's main source file.
    pub fn source(self) -> &'static str {
        match self {
            Lang::Rust => "src/lib.rs",
            Lang::Python => "app.py",
            Lang::Js => "app.js",
        }
    }

    /// The language's name, as `--lang` takes it.
    pub fn id(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    /// The language's name for people.
    pub fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }

    /// How to export the broker, for the message of a component that exports none.
    fn export_hint(self) -> &'static str {
        match self {
            Lang::Rust => "end src/lib.rs with `export_broker!(YourBroker);`",
            Lang::Python => "end app.py with `Osb = export(YourBroker)`",
            Lang::Js => "end app.js with `export const osb = exportBroker(new YourBroker());`",
        }
    }
}

/// A broker project: its directory, language and name (that of its manifest `NAME.toml`).
#[derive(Debug, Clone)]
pub struct Project {
    /// The project's directory.
    pub dir: PathBuf,
    /// Its language.
    pub lang: Lang,
    /// The broker's name.
    pub name: String,
}

impl Project {
    /// The project in `dir`: its language from the marker file, its name from the one manifest
    /// (`NAME.toml`, not `Cargo.toml`) beside it.
    ///
    /// # Errors
    /// A directory that holds no broker project, or several manifests or languages.
    pub fn find(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("no directory {}", dir.display()))?;
        let langs: Vec<Lang> = [Lang::Rust, Lang::Python, Lang::Js]
            .into_iter()
            .filter(|lang| dir.join(lang.marker()).is_file())
            .collect();
        let lang = match langs.as_slice() {
            [lang] => *lang,
            [] => bail!(
                "{} is not a broker project: it has no Cargo.toml (Rust), app.py (Python) or \
                 app.js (JavaScript); `brokerbox new NAME --lang rust|python|js` makes one",
                dir.display()
            ),
            _ => bail!(
                "{} has sources of several languages ({}): keep one broker per directory",
                dir.display(),
                langs
                    .iter()
                    .map(|l| l.marker())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut manifests = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let is_manifest = path.extension().is_some_and(|e| e == "toml")
                && !matches!(
                    path.file_name().and_then(|n| n.to_str()),
                    Some("Cargo.toml" | "pyproject.toml" | "rust-toolchain.toml")
                );
            if is_manifest && path.is_file() {
                manifests.push(path);
            }
        }
        manifests.sort();
        let name = match manifests.as_slice() {
            [manifest] => manifest
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string(),
            [] => bail!(
                "{} has no manifest: add NAME.toml (credentials, limits, grants) beside the \
                 sources; `brokerbox new` writes one",
                dir.display()
            ),
            _ => bail!(
                "{} has several manifests ({}): keep one NAME.toml, named after the broker",
                dir.display(),
                manifests
                    .iter()
                    .filter_map(|p| p.file_name()?.to_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if !crate::registry::valid_broker_name(&name) {
            bail!(
                "{name}.toml: a broker's name (its manifest's file name) uses only a-z, 0-9, '-' \
                 and '_' (at most 64)"
            );
        }
        Ok(Project { dir, lang, name })
    }

    /// The manifest, `NAME.toml`.
    pub fn manifest(&self) -> PathBuf {
        self.dir.join(format!("{}.toml", self.name))
    }

    /// Where the build writes `NAME.wasm` and `NAME.toml`.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("build")
    }

    /// The built component.
    pub fn wasm(&self) -> PathBuf {
        self.out_dir().join(format!("{}.wasm", self.name))
    }
}
