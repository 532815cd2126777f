//! `/healthz` (the process answers) and `/readyz` (it can serve: the state store answers
//! within a bound, the brokers are loaded, the engine instantiates). Both are unauthenticated
//! and carry no tenant data beyond the names of quarantined brokers.

use super::metrics::{BrokerInfoLabels, BrokerLabels, CensusMetrics, OperationLabels};
use super::TelemetryState;
use crate::registry::Brokers;
use crate::reload::Reloader;
use crate::store::{StateStore, StoreError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `/readyz` waits for the state store before calling it unready.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a readiness verdict is reused: a flood of `/readyz` costs the store one query
/// per second, not one per request.
pub const VERDICT_TTL: Duration = Duration::from_secs(1);
/// How long the engine probe waits for a live instance slot.
pub const SLOT_WAIT: Duration = Duration::from_secs(1);

/// The smallest component there is (no imports, no code): what `/readyz` instantiates to
/// know the engine and its instance pool work.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

/// What the health routes look at.
pub struct Health {
    started: Instant,
    store: Arc<dyn StateStore>,
    brokers: Arc<Brokers>,
    reloader: Arc<Reloader>,
    engine: wasmtime::Engine,
    probe: wasmtime::component::Component,
    /// The probe holds a live instance slot like any call (the instance pool has room for
    /// exactly the slots there are): one of its own, so it never waits behind a broker.
    live: crate::sandbox::slots::LiveSlots,
    slot: crate::sandbox::slots::BrokerSlots,
    /// The warm instances waiting for a call, counted at each scrape.
    idle: crate::sandbox::warm::IdleSlots,
    verdict: tokio::sync::Mutex<Option<(Instant, StatusCode, Value)>>,
}

impl Health {
    /// Health of a runtime serving `brokers` from `store`, on `sandbox`'s engine.
    ///
    /// # Errors
    /// When the engine cannot compile the empty probe component.
    pub fn new(
        store: Arc<dyn StateStore>,
        brokers: Arc<Brokers>,
        reloader: Arc<Reloader>,
        sandbox: &crate::sandbox::Sandbox,
    ) -> anyhow::Result<Self> {
        let engine = sandbox.engine.clone();
        let probe = wasmtime::component::Component::new(&engine, EMPTY_COMPONENT)?;
        // Not a broker name (those are a-z, 0-9, '-' and '_'): a share of its own.
        let slot = sandbox.live.broker("(readiness probe)", 1);
        Ok(Health {
            started: Instant::now(),
            store,
            brokers,
            reloader,
            engine,
            probe,
            live: sandbox.live.clone(),
            slot,
            idle: sandbox.idle.clone(),
            verdict: tokio::sync::Mutex::new(None),
        })
    }

    /// Seconds since start.
    fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Whether the engine can instantiate a component now. `Ok(false)`: every live instance
    /// slot stayed busy for [`SLOT_WAIT`], so the probe did not run. That is load, not a
    /// fault: the runtime stays ready (taking it out of a load balancer would only move the
    /// load elsewhere), and the answer says `busy`.
    async fn engine_ok(&self) -> Result<bool, String> {
        let Ok(_slot) = tokio::time::timeout(SLOT_WAIT, self.live.acquire(&self.slot)).await else {
            return Ok(false);
        };
        let mut store = wasmtime::Store::new(&self.engine, ());
        store.set_fuel(1_000).map_err(|e| e.to_string())?;
        store.set_epoch_deadline(1_000);
        let linker = wasmtime::component::Linker::<()>::new(&self.engine);
        (linker.instantiate_async(&mut store, &self.probe).await)
            .map(|_| true)
            .map_err(|e| format!("{e:#}"))
    }

    /// The readiness verdict, checked anew at most once per [`VERDICT_TTL`].
    async fn readiness(&self) -> (StatusCode, Value) {
        let mut verdict = self.verdict.lock().await;
        if let Some((at, status, body)) = verdict.as_ref() {
            if at.elapsed() < VERDICT_TTL {
                return (*status, body.clone());
            }
        }
        let checked = Instant::now();
        let store = match tokio::time::timeout(STORE_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {} ms", STORE_TIMEOUT.as_millis())),
        };
        let store_ms = checked.elapsed().as_millis();
        let engine = self.engine_ok().await;
        let busy = matches!(engine, Ok(false));
        let engine = engine.map(drop);
        let generation = self.brokers.current();
        let quarantined: Vec<String> = self
            .reloader
            .problems()
            .into_keys()
            .filter(|name| generation.get(name).is_none())
            .collect();
        let ready = store.is_ok() && engine.is_ok();
        let check = |result: &Result<(), String>| match result {
            Ok(()) => json!({ "ok": true }),
            Err(error) => json!({ "ok": false, "error": error }),
        };
        let mut engine_check = check(&engine);
        engine_check["busy"] = json!(busy);
        let mut store_check = check(&store);
        store_check["ms"] = json!(store_ms);
        let body = json!({
            "ready": ready,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.uptime(),
            "checks": {
                "store": store_check,
                "engine": engine_check,
                "brokers": { "ok": true, "serving": generation.all().count(), "quarantined": quarantined },
            },
        });
        if !ready {
            tracing::warn!(store = ?store.err(), engine = ?engine.err(), "not ready");
        }
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        *verdict = Some((Instant::now(), status, body.clone()));
        (status, body)
    }

    /// Sets the census gauges from the store and the current generation.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn refresh_census(&self, census: &CensusMetrics) -> Result<(), StoreError> {
        let counts = tokio::time::timeout(STORE_TIMEOUT, self.store.census())
            .await
            .map_err(|_| StoreError::Backend("the census query timed out".into()))??;
        let generation = self.brokers.current();
        let tenant_of = |broker: &str| {
            generation
                .get(broker)
                .and_then(|b| b.manifest.tenant.clone())
        };
        let labels = |broker: &str| BrokerLabels::new(broker, tenant_of(broker).as_deref());
        // Brokers with nothing left drop out of the series.
        census.instances.clear();
        census.bindings.clear();
        census.operations.clear();
        census.brokers.clear();
        for (broker, n) in &counts.instances {
            census
                .instances
                .get_or_create(&labels(broker))
                .set(gauge(*n));
        }
        for (broker, n) in &counts.bindings {
            census
                .bindings
                .get_or_create(&labels(broker))
                .set(gauge(*n));
        }
        for (broker, kind, state, n) in &counts.operations {
            let labels = OperationLabels {
                broker: broker.clone(),
                kind: kind.as_str(),
                state: state.as_str(),
            };
            census.operations.get_or_create(&labels).set(gauge(*n));
        }
        for broker in generation.all() {
            let labels = BrokerInfoLabels {
                broker: broker.name.clone(),
                tenant: broker.manifest.tenant.clone().unwrap_or_default(),
                version: broker.version.clone(),
            };
            census.brokers.get_or_create(&labels).set(1);
        }
        let quarantined = (self.reloader.problems().into_keys())
            .filter(|name| generation.get(name).is_none())
            .count();
        census.quarantined.set(gauge(quarantined as u64));
        census.idle_instances.set(gauge(self.idle.idle() as u64));
        census
            .idle_memory_bytes
            .set(gauge(u64::from(self.idle.idle_memory_mib()) * 1024 * 1024));
        Ok(())
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `GET /healthz`: the process is alive and serving HTTP.
pub async fn healthz(State(state): State<TelemetryState>) -> Response {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.health.uptime(),
    }))
    .into_response()
}

/// `GET /readyz`: 200 when the runtime can serve, 503 (with the failing check) when not.
pub async fn readyz(State(state): State<TelemetryState>) -> Response {
    let (status, body) = state.health.readiness().await;
    (status, Json(body)).into_response()
}
