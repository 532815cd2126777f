//! brokerbox: hosts Open Service Broker (OSB v2.17) brokers compiled to WebAssembly components.
//!
//! The runtime serves the OSB HTTP API of every broker in its brokers dir at
//! `/brokers/NAME/v2/...`, runs each call in a fresh sandboxed instance of the broker's
//! component, and keeps instances, bindings and operations in a durable state store.
//!
//! # Layout
//!
//! Layers point one way (docs/architecture.md has the whole map and a request's path):
//!
//! - **edge** — `osb` (the OSB API: extractors, checks, handlers) and `admin` (the admin
//!   API); `error` maps every lower error to an OSB answer.
//! - **operations** — `ops`: stored calls, the create/change state machine, running and
//!   settling operations, pollers and recovery.
//! - **registry** — [`registry`] (loaded brokers and their generations) and [`reload`] (the one
//!   way a version comes to serve, decided in the book of versions).
//! - **sandbox** — [`sandbox`]: wasmtime, one store per call, limits, host imports.
//! - **store** — [`store`]: the durable state behind narrow traits, SQLite or PostgreSQL.
//!
//! Around them: [`config`] (every setting), [`server`] and [`cli`] (starting a runtime),
//! [`tls`] (HTTPS with certificates reloaded when their files change),
//! [`watch`] (`--watch`), [`catalog`] and [`manifest`] (what a broker declares), [`auth`],
//! [`client`] (the one OSB client), [`check`] (the conformance checker) and [`telemetry`]
//! (health, metrics, logs and traces: each layer owns its counters, registered together).

pub(crate) mod admin;
pub mod auth;
pub mod author;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub(crate) mod error;
pub mod manifest;
pub(crate) mod ops;
pub(crate) mod osb;
pub mod registry;
pub mod reload;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod watch;

pub use server::{RunningServer, Runtime, ServeConfig};
