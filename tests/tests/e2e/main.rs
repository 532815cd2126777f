//! End-to-end tests: real runtimes, real HTTP on loopback, real guest components. One test
//! binary (modules below) keeps link time down.

mod admin;
mod author;
mod book;
mod check;
mod conformance;
mod isolation;
mod operator;
mod osb;
mod polyglot;
mod process;
mod recovery;
mod reload;
mod rules;
mod sandbox;
mod schema;
mod secrets;
mod telemetry;
mod tls;
