//! `brokerbox new NAME --lang L`: a broker project from the language's template, ready to build
//! and to pass `brokerbox check --examples` as generated.

use super::embedded::TEMPLATES;
use super::Lang;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// Where the Rust SDK crate is when `--sdk` is not given: the repository this binary was built
/// from (`cargo install --path runtime` keeps pointing at it).
const DEFAULT_RUST_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk/rust");

/// Options of `brokerbox new`.
#[derive(Debug, Clone, clap::Args)]
pub struct NewArgs {
    /// The broker's name: a-z, 0-9, '-' and '_', starting with a letter. It names the
    /// project's directory, its manifest and its URL (/brokers/NAME).
    pub name: String,
    /// The language of the broker.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// The directory to create the project in (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `brokerbox-sdk` crate a Rust project depends on (default: the repository this
    /// binary was built from).
    #[arg(long, env = "BROKERBOX_RUST_SDK")]
    pub sdk: Option<PathBuf>,
}

/// `my-db` → `MyDb`: the broker type's name in the generated source.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<String>()
        + "Broker"
}

/// The template file `path` with every `{{key}}` replaced.
fn render(path: &str, values: &[(&str, String)]) -> anyhow::Result<String> {
    let text = TEMPLATES
        .get_file(path)
        .and_then(|f| f.contents_utf8())
        .with_context(|| format!("template {path} is missing from this build"))?;
    Ok(values.iter().fold(text.to_string(), |text, (key, value)| {
        text.replace(&format!("{{{{{key}}}}}"), value)
    }))
}

/// Creates the project; returns its directory.
///
/// # Errors
/// A bad name, a directory that exists and is not empty, a Rust SDK that cannot be found, or
/// a file that cannot be written.
pub fn create(args: &NewArgs) -> anyhow::Result<PathBuf> {
    let name = args.name.as_str();
    if !crate::registry::valid_broker_name(name)
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        bail!("{name:?} cannot name a broker: use a-z, 0-9, '-' and '_' (at most 64), starting with a letter");
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty: choose another NAME or --dir",
            dir.display()
        );
    }
    let lang = args.lang;
    let mut values = vec![
        ("name", name.to_string()),
        ("type_name", type_name(name)),
        ("service_id", uuid::Uuid::new_v4().to_string()),
        ("plan_id", uuid::Uuid::new_v4().to_string()),
        ("password", uuid::Uuid::new_v4().simple().to_string()),
        (
            "memory_mib",
            if lang == Lang::Rust { "32" } else { "64" }.to_string(),
        ),
        ("language", lang.title().to_string()),
        ("lang", lang.id().to_string()),
        ("source", lang.source().to_string()),
    ];
    if lang == Lang::Rust {
        let sdk = args
            .sdk
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUST_SDK));
        let sdk = sdk
            .canonicalize()
            .ok()
            .filter(|p| p.join("Cargo.toml").is_file())
            .with_context(|| {
                format!(
                "the Rust SDK (crate brokerbox-sdk) is not at {}: pass --sdk PATH to its directory \
                 (guest-sdk/rust in the brokerbox repository)",
                sdk.display()
            )
            })?;
        // TOML basic strings take `\` as an escape; a path needs none of them on Unix.
        values.push(("sdk", sdk.display().to_string().replace('\\', "/")));
    }
    let files: Vec<(String, String)> = match lang {
        Lang::Rust => vec![
            ("rust/Cargo.toml".into(), "Cargo.toml".into()),
            ("rust/src/lib.rs".into(), "src/lib.rs".into()),
            ("rust/gitignore".into(), ".gitignore".into()),
        ],
        Lang::Python => vec![
            ("python/app.py".into(), "app.py".into()),
            ("python/gitignore".into(), ".gitignore".into()),
        ],
        Lang::Js => vec![
            ("js/app.js".into(), "app.js".into()),
            ("js/gitignore".into(), ".gitignore".into()),
        ],
    }
    .into_iter()
    .chain([
        ("manifest.toml".to_string(), format!("{name}.toml")),
        ("README.md".to_string(), "README.md".to_string()),
    ])
    .collect();
    for (template, target) in files {
        write(&dir.join(target), &render(&template, &values)?)?;
    }
    Ok(dir)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("my-db"), "MyDbBroker");
        assert_eq!(type_name("files_2"), "Files2Broker");
    }

    #[test]
    fn every_placeholder_of_every_template_is_filled() {
        let dir = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let args = NewArgs {
                name: format!("x-{}", lang.id()),
                lang,
                dir: Some(dir.path().join(lang.id())),
                sdk: None,
            };
            let project = create(&args).unwrap();
            let mut seen = 0;
            for entry in walk(&project) {
                let text = std::fs::read_to_string(&entry).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{} keeps a placeholder",
                    entry.display()
                );
                seen += 1;
            }
            assert!(seen >= 4, "{lang:?} wrote {seen} files");
            let found = super::super::Project::find(&project).unwrap();
            assert_eq!(
                (found.lang, found.name.as_str()),
                (lang, args.name.as_str())
            );
            // A second `new` into the same place is refused.
            assert!(create(&args).unwrap_err().to_string().contains("not empty"));
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
