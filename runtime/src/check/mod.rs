//! `brokerbox check`: a conformance checker that drives any OSB broker over HTTP through the
//! rules brokerbox enforces, discovering service and plan ids from the broker's catalog. It
//! creates (and removes again) instances and bindings with fresh random ids.

mod cases;

pub use crate::client::{Answer, Client};

use std::fmt::Write as _;

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// What was checked.
    pub name: String,
    /// Whether the broker behaved as OSB requires.
    pub passed: bool,
    /// What was seen, when it failed.
    pub detail: String,
}

/// All results of a check run.
#[derive(Debug, Default)]
pub struct Report {
    /// The cases, in the order they ran.
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// Records a case.
    pub fn record(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) {
        self.cases.push(CaseResult {
            name: name.into(),
            passed,
            detail: detail.into(),
        });
    }

    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// One line per case, then `N passed, M failed`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for case in &self.cases {
            if case.passed {
                let _ = writeln!(out, "PASS  {}", case.name);
            } else {
                let _ = writeln!(out, "FAIL  {}: {}", case.name, case.detail);
            }
        }
        let _ = writeln!(out, "{} passed, {} failed", self.passed(), self.failed());
        out
    }
}

/// Checks the broker at `url` (the URL a platform registers, before `/v2`), then runs each of
/// `examples` (a manifest's `[[examples]]`) as an acceptance test.
///
/// # Errors
/// Only when the broker cannot be reached at all or its catalog is unusable; every rule it
/// breaks is a failed case in the report instead.
pub async fn run(
    url: &str,
    username: &str,
    password: &str,
    examples: &[crate::manifest::Example],
) -> anyhow::Result<Report> {
    let client = Client::new(url, username, password)?;
    let mut report = Report::default();
    cases::run_all(&client, &mut report, examples).await?;
    Ok(report)
}
