//! Prometheus metrics: each layer owns the counters it updates (the edge its requests, the
//! sandbox its guest calls and lane waits, the reloader its decisions, the store its latency
//! and operation durations), and [`Metrics`] registers them all in one registry per runtime.
//!
//! Labels name a broker and its tenant, never an instance or binding id, so the number of
//! series grows with the brokers an operator hosts, not with what clients send: a request for
//! a broker that does not serve is counted under `broker=""`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// A family of histograms built by a plain function (the bucket layout).
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets for durations in seconds: 0.5 ms to ~65 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Buckets for fuel units: 10 thousand to ~40 billion.
fn fuel_units() -> Histogram {
    Histogram::new(exponential_buckets(10_000.0, 4.0, 12))
}

/// A broker and the tenant it belongs to (`""` when none).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    /// The broker's name.
    pub broker: String,
    /// Its tenant.
    pub tenant: String,
}

impl BrokerLabels {
    /// The labels of broker `name` of `tenant`.
    pub fn new(name: &str, tenant: Option<&str>) -> Self {
        BrokerLabels {
            broker: name.to_string(),
            tenant: tenant.unwrap_or_default().to_string(),
        }
    }
}

/// An OSB request's broker and endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The broker's name.
    pub broker: String,
    /// Its tenant.
    pub tenant: String,
    /// Which OSB endpoint (`catalog`, `provision`, `bind`, ...).
    pub endpoint: &'static str,
}

/// An OSB request's broker, endpoint and answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// The broker's name.
    pub broker: String,
    /// Its tenant.
    pub tenant: String,
    /// Which OSB endpoint.
    pub endpoint: &'static str,
    /// The HTTP status answered.
    pub status: u16,
}

/// Requests on the OSB API.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    /// Requests by broker, endpoint and status.
    pub requests: Family<StatusLabels, Counter>,
    /// Their durations by broker and endpoint.
    pub seconds: Histograms<EndpointLabels>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(seconds),
        }
    }
}

impl RequestMetrics {
    /// Counts one answered request.
    pub fn observe(&self, labels: EndpointLabels, status: u16, took: Duration) {
        self.seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let labels = StatusLabels {
            broker: labels.broker,
            tenant: labels.tenant,
            endpoint: labels.endpoint,
            status,
        };
        self.requests.get_or_create(&labels).inc();
    }
}

/// A guest call's broker and function.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The broker's name.
    pub broker: String,
    /// Its tenant.
    pub tenant: String,
    /// The function called (`catalog`, `provision`, ..., `last_operation`).
    pub call: &'static str,
}

/// A guest call's broker, function and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The broker's name.
    pub broker: String,
    /// Its tenant.
    pub tenant: String,
    /// The function called.
    pub call: &'static str,
    /// How it ended: `ok`, `broker_error`, or the limit or fault that stopped it (`fuel`,
    /// `deadline`, `memory`, `output_cap`, `trap`, `busy`, `host_error`).
    pub outcome: &'static str,
}

/// Guest calls of every broker.
#[derive(Clone, Debug)]
pub struct CallMetrics {
    /// Calls by broker, function and outcome.
    pub calls: Family<OutcomeLabels, Counter>,
    /// Their durations (from asking for a slot to the end) by broker and function.
    pub seconds: Histograms<CallLabels>,
    /// Fuel used per call, by broker.
    pub fuel: Histograms<BrokerLabels>,
    /// Calls served by a warm instance (`limits.calls_per_instance`), by broker.
    pub warm: Family<BrokerLabels, Counter>,
}

impl Default for CallMetrics {
    fn default() -> Self {
        CallMetrics {
            calls: Family::default(),
            seconds: Family::new_with_constructor(seconds),
            fuel: Family::new_with_constructor(fuel_units),
            warm: Family::default(),
        }
    }
}

/// Waits of long-running guest calls for a CPU lane.
#[derive(Clone, Debug)]
pub struct LaneMetrics {
    /// How long each wait took.
    pub waits: Histogram,
}

impl Default for LaneMetrics {
    fn default() -> Self {
        LaneMetrics { waits: seconds() }
    }
}

/// A reload decision's broker and result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// The broker (`""` for a refused version of a broker that does not serve).
    pub broker: String,
    /// Its tenant.
    pub tenant: String,
    /// `accepted` or `refused`.
    pub result: &'static str,
}

/// Versions offered to the reloader.
#[derive(Clone, Debug, Default)]
pub struct ReloadMetrics {
    /// Decisions by broker and result (an unchanged version is not counted).
    pub reloads: Family<ReloadLabels, Counter>,
}

/// A state store call's kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    /// `read` or `write`.
    pub op: &'static str,
}

/// An ended operation's broker, kind and result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The broker's name.
    pub broker: String,
    /// provision, update, deprovision, bind or unbind.
    pub kind: &'static str,
    /// in progress, succeeded or failed (the OSB `last_operation` states).
    pub state: &'static str,
}

/// The state store's own figures.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    /// Latency of reads and of writes (a write's transaction, committed and as durable as it
    /// asked).
    pub seconds: Histograms<StoreOpLabels>,
    /// Durations of ended operations (start to outcome) by broker, kind and result.
    pub operation_seconds: Histograms<OperationLabels>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            seconds: Family::new_with_constructor(seconds),
            operation_seconds: Family::new_with_constructor(seconds),
        }
    }
}

impl StoreMetrics {
    /// Records a read (`write` false) or write that took `took`.
    pub fn observe(&self, write: bool, took: Duration) {
        let op = if write { "write" } else { "read" };
        self.seconds
            .get_or_create(&StoreOpLabels { op })
            .observe(took.as_secs_f64());
    }
}

/// What a scrape reads from the state store: how much each broker holds.
#[derive(Clone, Debug, Default)]
pub struct CensusMetrics {
    /// Instances per broker.
    pub instances: Family<BrokerLabels, Gauge>,
    /// Bindings per broker.
    pub bindings: Family<BrokerLabels, Gauge>,
    /// Operations in the store, by broker, kind and state.
    pub operations: Family<OperationLabels, Gauge>,
    /// One series per serving broker: its tenant and version, value 1.
    pub brokers: Family<BrokerInfoLabels, Gauge>,
    /// Brokers quarantined (listed, not serving).
    pub quarantined: Gauge,
    /// Warm instances waiting for a call (`limits.calls_per_instance`), all brokers.
    pub idle_instances: Gauge,
    /// The linear memory they hold, as counted against the runtime's bound.
    pub idle_memory_bytes: Gauge,
}

/// A serving broker's identity.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerInfoLabels {
    /// The broker's name.
    pub broker: String,
    /// Its tenant.
    pub tenant: String,
    /// The version serving.
    pub version: String,
}

/// Every metric of a runtime, registered under `brokerbox_`.
pub struct Metrics {
    registry: Registry,
    /// The gauges each scrape refreshes from the store.
    pub census: CensusMetrics,
    /// One scrape at a time: a burst of scrapes queries the store once each, in turn.
    pub scraping: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The metrics a runtime's parts own, to register together.
pub struct Parts {
    /// The OSB edge's.
    pub requests: RequestMetrics,
    /// The sandbox's guest calls.
    pub calls: CallMetrics,
    /// The sandbox's CPU lanes.
    pub lanes: LaneMetrics,
    /// The reloader's.
    pub reloads: ReloadMetrics,
    /// The state store's.
    pub store: StoreMetrics,
}

impl Metrics {
    /// A registry holding `parts` and the census gauges.
    pub fn new(parts: Parts) -> Self {
        let mut registry = Registry::with_prefix("brokerbox");
        let census = CensusMetrics::default();
        let r = &mut registry;
        r.register(
            "osb_requests",
            "OSB requests answered, by broker, endpoint and status",
            parts.requests.requests,
        );
        r.register(
            "osb_request_duration_seconds",
            "Time to answer an OSB request, by broker and endpoint",
            parts.requests.seconds,
        );
        r.register(
            "guest_calls",
            "Calls into broker components, by broker, function and outcome",
            parts.calls.calls,
        );
        r.register(
            "guest_call_duration_seconds",
            "Duration of guest calls (waiting for a slot included), by broker and function",
            parts.calls.seconds,
        );
        r.register(
            "guest_call_fuel",
            "Fuel (wasm CPU units) used per guest call, by broker",
            parts.calls.fuel,
        );
        r.register(
            "guest_warm_calls",
            "Guest calls served by a warm instance instead of a fresh one, by broker",
            parts.calls.warm,
        );
        r.register(
            "lane_wait_duration_seconds",
            "Time long-running guest calls waited for a CPU lane",
            parts.lanes.waits,
        );
        r.register(
            "reloads",
            "Broker versions decided, by broker and result (accepted or refused)",
            parts.reloads.reloads,
        );
        r.register(
            "store_duration_seconds",
            "State store latency, by op (read, or a durable write's transaction)",
            parts.store.seconds,
        );
        r.register(
            "operation_duration_seconds",
            "Duration of ended operations, start to outcome, by broker, kind and state",
            parts.store.operation_seconds,
        );
        r.register(
            "operations",
            "Operations in the state store, by broker, kind and state (read at scrape)",
            census.operations.clone(),
        );
        r.register(
            "instances",
            "Service instances per broker (read at scrape)",
            census.instances.clone(),
        );
        r.register(
            "bindings",
            "Service bindings per broker (read at scrape)",
            census.bindings.clone(),
        );
        r.register(
            "broker_info",
            "Each serving broker: its tenant and version (value 1)",
            census.brokers.clone(),
        );
        r.register(
            "brokers_quarantined",
            "Brokers that do not serve: no version of theirs loads",
            census.quarantined.clone(),
        );
        r.register(
            "guest_idle_instances",
            "Warm guest instances waiting for a call (manifests with calls_per_instance above 1)",
            census.idle_instances.clone(),
        );
        r.register(
            "guest_idle_memory_bytes",
            "Linear memory held by the warm instances waiting for a call",
            census.idle_memory_bytes.clone(),
        );
        Metrics {
            registry,
            census,
            scraping: tokio::sync::Mutex::new(()),
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// Every `endpoint` label value.
pub const ENDPOINTS: [&str; 11] = [
    "catalog",
    "provision",
    "update",
    "deprovision",
    "fetch_instance",
    "instance_last_operation",
    "bind",
    "unbind",
    "fetch_binding",
    "binding_last_operation",
    "other",
];
/// Every `call` label value.
pub const CALLS: [&str; 7] = [
    "catalog",
    "provision",
    "update",
    "deprovision",
    "bind",
    "unbind",
    "last_operation",
];
/// Every `outcome` label value.
pub const OUTCOMES: [&str; 10] = [
    "ok",
    "broker_error",
    "fuel",
    "deadline",
    "memory",
    "output_cap",
    "trap",
    "busy",
    "host_error",
    "cancelled",
];
/// Every operation `kind` label value.
pub const KINDS: [&str; 5] = ["provision", "update", "deprovision", "bind", "unbind"];
/// Every operation `state` label value.
pub const STATES: [&str; 3] = ["in progress", "succeeded", "failed"];

/// Drops the series of a broker that was removed, so brokers coming and going (a tenant's
/// uploads under ever new names, say) do not grow the metrics without end. It walks every
/// label set the broker can have: a removal is rare, a scrape is not.
#[derive(Clone, Debug)]
pub struct Forget {
    /// The edge's requests.
    pub requests: RequestMetrics,
    /// The guest calls.
    pub calls: CallMetrics,
    /// The reloads.
    pub reloads: ReloadMetrics,
    /// Operation durations.
    pub store: StoreMetrics,
    /// The tenants a broker may belong to (besides none).
    pub tenants: Vec<String>,
}

impl Forget {
    /// Removes every series of broker `broker`.
    pub fn forget(&self, broker: &str) {
        let tenants = self.tenants.iter().map(String::as_str).chain([""]);
        for tenant in tenants {
            let who = BrokerLabels::new(broker, Some(tenant));
            for endpoint in ENDPOINTS {
                let labels = EndpointLabels {
                    broker: who.broker.clone(),
                    tenant: who.tenant.clone(),
                    endpoint,
                };
                self.requests.seconds.remove(&labels);
                for status in 100..600 {
                    self.requests.requests.remove(&StatusLabels {
                        broker: who.broker.clone(),
                        tenant: who.tenant.clone(),
                        endpoint,
                        status,
                    });
                }
            }
            for call in CALLS {
                let labels = CallLabels {
                    broker: who.broker.clone(),
                    tenant: who.tenant.clone(),
                    call,
                };
                self.calls.seconds.remove(&labels);
                for outcome in OUTCOMES {
                    self.calls.calls.remove(&OutcomeLabels {
                        broker: who.broker.clone(),
                        tenant: who.tenant.clone(),
                        call,
                        outcome,
                    });
                }
            }
            self.calls.fuel.remove(&who);
            self.calls.warm.remove(&who);
            for result in ["accepted", "refused"] {
                self.reloads.reloads.remove(&ReloadLabels {
                    broker: who.broker.clone(),
                    tenant: who.tenant.clone(),
                    result,
                });
            }
        }
        for kind in KINDS {
            for state in STATES {
                self.store.operation_seconds.remove(&OperationLabels {
                    broker: broker.to_string(),
                    kind,
                    state,
                });
            }
        }
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OperationKind, OperationState};

    #[test]
    fn the_label_lists_hold_every_value_the_runtime_uses() {
        use OperationKind::*;
        let kinds = [Provision, Update, Deprovision, Bind, Unbind].map(OperationKind::as_str);
        assert_eq!(kinds, KINDS);
        let states = [
            OperationState::InProgress,
            OperationState::Succeeded,
            OperationState::Failed,
        ];
        assert_eq!(states.map(OperationState::as_str), STATES);
        use crate::sandbox::CallError::*;
        let errors = [
            Broker(crate::sandbox::bindings::types::BrokerError::Gone(
                String::new(),
            )),
            FuelExhausted(1),
            Timeout(1),
            MemoryLimit(1),
            TooMuchData(1),
            StackOverflow,
            Trap(String::new()),
            Busy(1),
            Host(String::new()),
        ];
        for error in errors {
            assert!(OUTCOMES.contains(&error.outcome()), "{}", error.outcome());
        }
    }

    #[test]
    fn forgetting_a_broker_drops_all_its_series_and_keeps_the_others() {
        let requests = RequestMetrics::default();
        let calls = CallMetrics::default();
        let forget = Forget {
            requests: requests.clone(),
            calls: calls.clone(),
            reloads: ReloadMetrics::default(),
            store: StoreMetrics::default(),
            tenants: vec!["team-a".into()],
        };
        for (broker, tenant) in [("gone", Some("team-a")), ("stays", None)] {
            let labels = |endpoint| EndpointLabels {
                broker: broker.into(),
                tenant: tenant.unwrap_or_default().into(),
                endpoint,
            };
            requests.observe(labels("provision"), 201, Duration::from_millis(3));
            requests.observe(labels("catalog"), 401, Duration::from_millis(1));
            let call = OutcomeLabels {
                broker: broker.into(),
                tenant: tenant.unwrap_or_default().into(),
                call: "bind",
                outcome: "fuel",
            };
            calls.calls.get_or_create(&call).inc();
            calls
                .warm
                .get_or_create(&BrokerLabels::new(broker, tenant))
                .inc();
        }
        let render = || {
            let mut registry = Registry::default();
            registry.register("requests", "", requests.requests.clone());
            registry.register("seconds", "", requests.seconds.clone());
            registry.register("calls", "", calls.calls.clone());
            registry.register("warm", "", calls.warm.clone());
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        let series = |text: &str, broker: &str| {
            let label = format!("broker=\"{broker}\"");
            text.lines().filter(|l| l.contains(&label)).count()
        };
        let before = render();
        assert!(series(&before, "gone") > 0);
        let kept = series(&before, "stays");
        forget.forget("gone");
        let after = render();
        assert_eq!(series(&after, "gone"), 0, "{after}");
        assert_eq!(series(&after, "stays"), kept);
    }
}
