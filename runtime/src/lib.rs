//! brokerbox: hosts Open Service Broker (OSB v2.17) brokers compiled to WebAssembly components.
//!
//! The runtime serves the OSB HTTP API of every broker in its brokers dir at
//! `/brokers/NAME/v2/...`, runs each call in a fresh sandboxed instance of the broker's
//! component, and keeps instances, bindings and operations in a durable state store.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod manifest;
pub mod ops;
pub mod osb;
pub mod registry;
pub mod reload;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod watch;

pub use server::{RunningServer, Runtime, ServeConfig};
