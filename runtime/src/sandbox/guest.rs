//! A compiled broker component and the one way to call it: a fresh `Store` and instance per
//! call (or a warm one, when the manifest opts in: see [`super::warm`]), fuel and a wall-clock
//! deadline set, the outcome classified, the instance dropped (or kept warm).

use super::bindings::types::{
    BindRequest, BindingResponse, BrokerError, DeleteResponse, DeprovisionRequest,
    InstanceResponse, LastOperationRequest, OperationState, ProvisionRequest, ServiceCatalog,
    UnbindRequest, UpdateRequest,
};
use super::bindings::BrokerPre;
use super::host::{Grants, GuestLog, HostState};
use super::limits::{Limits, MAX_CATALOG_HOSTCALL_BYTES, MAX_HOSTCALL_BYTES};
use super::Sandbox;
use super::{CallError, CallInfo};
use anyhow::Context;
use wasmtime::component::{ComponentExportIndex, HasSelf, Instance, Linker};
use wasmtime::Store;

/// A broker's compiled component, ready to be instantiated for each call.
pub struct Guest {
    name: String,
    pre: BrokerPre<HostState>,
    limits: Limits,
    grants: Grants,
    /// This broker's concurrency cap and share of the reserved live slots.
    slots: super::slots::BrokerSlots,
    /// The runtime's live instance slots.
    live: super::slots::LiveSlots,
    /// Where long-running calls take turns.
    lanes: super::lanes::Lanes,
    /// The broker and tenant its metrics are labelled with.
    labels: crate::telemetry::metrics::BrokerLabels,
    /// Where its calls are counted.
    metrics: crate::telemetry::metrics::CallMetrics,
    /// Its warm instances, when `limits.calls_per_instance` lets calls reuse them.
    warm: Option<std::sync::Arc<super::warm::WarmPool>>,
    /// Where each function of its `osb` export is.
    exports: OsbExports,
    /// Whether all seven `osb` functions were type-checked (at the first instantiation: the
    /// catalog call of its load), so a mistyped export refuses the load.
    checked: std::sync::atomic::AtomicBool,
}

/// The `osb` interface's name as `wit/broker.wit` gives it (its package version included).
const OSB_INTERFACE: &str = "brokerbox:broker/osb@0.1.0";

/// Where the functions of a component's `osb` export are, found once per component: a call
/// looks up and type-checks only the function it calls (the generated bindings would check
/// all seven on every instantiation; [`Guest`] checks them all once).
struct OsbExports {
    catalog: ComponentExportIndex,
    provision: ComponentExportIndex,
    update: ComponentExportIndex,
    deprovision: ComponentExportIndex,
    bind: ComponentExportIndex,
    unbind: ComponentExportIndex,
    last_operation: ComponentExportIndex,
}

impl OsbExports {
    /// Finds the functions in `component` (already checked against the world by `BrokerPre`).
    fn find(component: &wasmtime::component::Component) -> anyhow::Result<Self> {
        let osb = component
            .get_export_index(None, OSB_INTERFACE)
            .with_context(|| format!("no exported instance named `{OSB_INTERFACE}`"))?;
        let function = |name: &str| {
            component
                .get_export_index(Some(&osb), name)
                .with_context(|| format!("`{OSB_INTERFACE}` does not export `{name}`"))
        };
        Ok(OsbExports {
            catalog: function("catalog")?,
            provision: function("provision")?,
            update: function("update")?,
            deprovision: function("deprovision")?,
            bind: function("bind")?,
            unbind: function("unbind")?,
            last_operation: function("last-operation")?,
        })
    }
}

/// One call into the guest's `osb` interface: the one call type between the operation layer
/// and the sandbox.
#[derive(Debug)]
pub enum Request {
    /// `catalog`.
    ServiceCatalog,
    /// `provision`.
    Provision(ProvisionRequest),
    /// `update`.
    Update(UpdateRequest),
    /// `deprovision`.
    Deprovision(DeprovisionRequest),
    /// `bind`.
    Bind(BindRequest),
    /// `unbind`.
    Unbind(UnbindRequest),
    /// `last-operation`.
    LastOperation(LastOperationRequest),
}

/// What the guest answered to a [`Request`].
#[derive(Debug)]
pub enum Response {
    /// To `catalog`.
    ServiceCatalog(ServiceCatalog),
    /// To `provision` and `update`.
    Instance(InstanceResponse),
    /// To `bind`.
    Binding(BindingResponse),
    /// To `deprovision` and `unbind`.
    Delete(DeleteResponse),
    /// To `last-operation`.
    Operation(OperationState),
}

/// Generates a typed method per operation over [`Guest::call`].
macro_rules! operation {
    ($(#[$doc:meta])* $name:ident($req:ty) -> $ty:ty, $resp:ident via $variant:ident) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// [`CallError::Broker`] when the broker refused; another [`CallError`] when a limit or a
        /// fault stopped the call.
        pub async fn $name(&self, info: &CallInfo, request: $req) -> Result<$ty, CallError> {
            match self.call(info, Request::$variant(request)).await? {
                Response::$resp(value) => Ok(value),
                _ => unreachable!("each request has one response type"),
            }
        }
    };
}

impl Guest {
    /// Compiles (or finds in the cache) the component `wasm` (named `label` in errors) and
    /// links it against the host's imports.
    ///
    /// # Errors
    /// When the file is not a component, or does not match the `broker` world.
    pub fn load(
        sandbox: &Sandbox,
        name: &str,
        label: &str,
        wasm: &[u8],
        limits: Limits,
        grants: Grants,
    ) -> anyhow::Result<Self> {
        let engine = &sandbox.engine;
        let component = sandbox
            .components
            .get_or_compile(engine, wasm)
            .with_context(|| format!("{label} is not a valid WebAssembly component"))?;
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // The files directory's calls go through the quota (replacing wasmtime-wasi's own).
        linker.allow_shadowing(true);
        super::files_quota::add_to_linker(&mut linker, |state: &mut HostState| {
            use wasmtime_wasi::filesystem::WasiFilesystemView;
            let quota = state.files_quota.clone();
            super::files_quota::QuotaFsView {
                fs: state.filesystem(),
                quota,
            }
        })?;
        linker.allow_shadowing(false);
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // The world's imports, each served by its own part of the host state.
        use super::bindings::brokerbox::broker::{config, kv, log, types};
        types::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;
        log::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;
        config::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;
        kv::add_to_linker::<_, HasSelf<super::kv::KvAccess>>(&mut linker, |state| &mut state.kv)?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(BrokerPre::new)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!("{label} does not implement the brokerbox:broker/broker world")
            })?;
        let exports = OsbExports::find(pre.instance_pre().component())?;
        let slots = sandbox.live.broker(name, limits.max_concurrency);
        let warm = (limits.calls_per_instance > 1).then(|| sandbox.idle.pool());
        Ok(Guest {
            exports,
            checked: std::sync::atomic::AtomicBool::new(false),
            warm,
            name: name.to_string(),
            pre,
            limits,
            grants,
            slots,
            live: sandbox.live.clone(),
            lanes: sandbox.lanes.clone(),
            labels: crate::telemetry::metrics::BrokerLabels::new(name, None),
            metrics: sandbox.calls.clone(),
        })
    }

    /// This guest, its calls counted under `tenant`.
    #[must_use]
    pub fn with_tenant(mut self, tenant: Option<&str>) -> Self {
        self.labels = crate::telemetry::metrics::BrokerLabels::new(&self.name, tenant);
        self
    }

    /// The limits applied to every call.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Asks the guest for its catalog.
    ///
    /// # Errors
    /// As for any call.
    pub async fn catalog(&self, info: &CallInfo) -> Result<ServiceCatalog, CallError> {
        match self.call(info, Request::ServiceCatalog).await? {
            Response::ServiceCatalog(value) => Ok(value),
            _ => unreachable!("each request has one response type"),
        }
    }

    operation!(/// Creates an instance.
        provision(ProvisionRequest) -> InstanceResponse, Instance via Provision);
    operation!(/// Updates an instance.
        update(UpdateRequest) -> InstanceResponse, Instance via Update);
    operation!(/// Deletes an instance.
        deprovision(DeprovisionRequest) -> DeleteResponse, Delete via Deprovision);
    operation!(/// Creates a binding.
        bind(BindRequest) -> BindingResponse, Binding via Bind);
    operation!(/// Deletes a binding.
        unbind(UnbindRequest) -> DeleteResponse, Delete via Unbind);
    operation!(/// Asks how a long operation is going.
        last_operation(LastOperationRequest) -> OperationState, Operation via LastOperation);

    /// Runs one request in a fresh store under the broker's limits, in a `guest_call` span (at
    /// DEBUG, like the operation's: exported as a trace, not paid for by INFO logs), counted by
    /// outcome with its duration and fuel.
    ///
    /// # Errors
    /// [`CallError::Broker`] when the broker refused; another [`CallError`] when a limit or a
    /// fault stopped the call.
    pub async fn call(&self, info: &CallInfo, request: Request) -> Result<Response, CallError> {
        use tracing::Instrument;
        let call = request.name();
        let span = tracing::debug_span!(
            "guest_call",
            broker = %self.name,
            tenant = %self.labels.tenant,
            call,
            request = info.request_identity.as_deref().unwrap_or("-"),
            outcome = tracing::field::Empty,
        );
        // Counts the call even when it is dropped half-way (a client that went away).
        let mut record = CallRecord {
            guest: self,
            call,
            started: std::time::Instant::now(),
            outcome: "cancelled",
            fuel: None,
        };
        let result = self
            .run(info, request, &mut record.fuel)
            .instrument(span.clone())
            .await;
        record.outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.outcome(),
        };
        span.record("outcome", record.outcome);
        // Broker, call and request are named on the line itself: spans are kept only at DEBUG.
        if let Err(error) = &result {
            let broker = &self.name;
            let request = info.request_identity.as_deref().unwrap_or("-");
            if let Some(limit) = error.limit() {
                span.in_scope(|| {
                    tracing::warn!(broker = %broker, call, request, limit, "guest call stopped: {error}")
                });
            } else if !matches!(error, CallError::Broker(_)) {
                span.in_scope(|| {
                    tracing::warn!(broker = %broker, call, request, "guest call failed: {error}")
                });
            }
        }
        result
    }

    /// [`Guest::call`] itself; sets `fuel` to what the call used once it ran.
    async fn run(
        &self,
        info: &CallInfo,
        request: Request,
        fuel: &mut Option<u64>,
    ) -> Result<Response, CallError> {
        // Bounds what the host allocates lifting one host call's arguments or the result.
        let hostcall_bytes = match request {
            Request::ServiceCatalog => MAX_CATALOG_HOSTCALL_BYTES,
            _ => MAX_HOSTCALL_BYTES,
        };
        let deadline = match info.deadline {
            Some(shorter) => shorter.min(self.limits.call_timeout()),
            None => self.limits.call_timeout(),
        };
        let waiting = tokio::time::Instant::now();
        let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        let _permits = tokio::time::timeout(deadline, self.live.acquire(&self.slots))
            .await
            .map_err(|_| CallError::Busy(deadline_ms))?;
        let deadline = deadline.saturating_sub(waiting.elapsed());
        // A warm instance is taken only once the call holds its live slot.
        let (mut store, warm, served) = match self.warm.as_ref().and_then(|w| w.take()) {
            Some((reused, calls)) => {
                self.metrics.warm.get_or_create(&self.labels).inc();
                let mut store = reused.store;
                store.data_mut().next_call(&self.grants, self.log(info));
                self.ready_store(&mut store, hostcall_bytes)?;
                (store, Some(reused.instance), calls)
            }
            None => (self.new_store(info, hostcall_bytes)?, None, 0),
        };
        let outcome = tokio::time::timeout(deadline, async {
            let instance = match warm {
                Some(instance) => instance,
                None => {
                    let instance = self
                        .pre
                        .instance_pre()
                        .instantiate_async(&mut store)
                        .await?;
                    self.check_exports(&mut store, &instance)?;
                    instance
                }
            };
            let answer = invoke(&instance, &self.exports, &mut store, request).await?;
            wasmtime::Result::Ok((instance, answer))
        })
        .await;
        *fuel = Some(
            self.limits
                .fuel
                .saturating_sub(store.get_fuel().unwrap_or(0)),
        );
        self.forward_output(&mut store);
        let memory_refused = store.data().limits.memory_refused;
        let outcome = match outcome {
            // The guest answered (a value or a refusal): its instance may serve again.
            Ok(Ok((instance, answer))) => {
                let calls = served + 1;
                if let Some(pool) = &self.warm {
                    if calls < self.limits.calls_per_instance {
                        let memory = store.data().limits.memory_now;
                        // An instance holding many host resources (open files, streams) would
                        // keep them open while idle: it is not kept.
                        if !store
                            .data_mut()
                            .holds_more_than(super::warm::MAX_IDLE_RESOURCES)
                        {
                            pool.park(super::warm::Instance { store, instance }, calls, memory);
                        }
                    }
                }
                Ok(Ok(answer))
            }
            Ok(Err(error)) => Ok(Err(error)),
            Err(elapsed) => Err(elapsed),
        };
        match outcome {
            Err(_elapsed) => Err(CallError::Timeout(deadline_ms)),
            Ok(Err(_)) if memory_refused => Err(CallError::MemoryLimit(self.limits.memory_mib)),
            Ok(Err(error)) => Err(CallError::from_wasmtime(
                &error,
                self.limits.fuel,
                hostcall_bytes,
            )),
            Ok(Ok(Err(refusal))) => Err(CallError::Broker(super::call::cap_refusal(refusal))),
            Ok(Ok(Ok(Response::Operation(state)))) => {
                Ok(Response::Operation(super::call::cap_operation_state(state)))
            }
            Ok(Ok(Ok(response))) => Ok(response),
        }
    }

    /// Type-checks all seven `osb` functions of `instance` against the world, the first time
    /// this guest is instantiated (later calls check only the function they call).
    fn check_exports(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<()> {
        use std::sync::atomic::Ordering;
        if !self.checked.load(Ordering::Relaxed) {
            super::bindings::Broker::new(&mut *store, instance)?;
            self.checked.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A fresh store for one call (see [`Guest::ready_store`]).
    fn new_store(
        &self,
        info: &CallInfo,
        hostcall_bytes: usize,
    ) -> Result<Store<HostState>, CallError> {
        let state = HostState::new(&self.grants, self.limits.memory_bytes(), self.log(info))
            .map_err(|e| CallError::Host(format!("{e:#}")))?;
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        // Every epoch tick the guest yields to tokio; past a short budget it also takes turns
        // with other long calls (see `lanes`).
        let lanes = self.lanes.clone();
        store.epoch_deadline_callback(move |mut ctx| {
            let remaining = ctx.get_fuel()?;
            let update = ctx.data_mut().turns.at_deadline(&lanes, remaining);
            if ctx.data().turns.just_became_long() {
                // From now on it also yields every slice of fuel, not only every tick.
                ctx.fuel_async_yield_interval(Some(super::lanes::LONG_CALL_SLICE_FUEL))?;
            }
            Ok(update)
        });
        self.ready_store(&mut store, hostcall_bytes)?;
        Ok(store)
    }

    /// Readies `store` (fresh, or warm from an earlier call) for one call: its fuel, hostcall
    /// budget, epoch deadline and turns.
    fn ready_store(
        &self,
        store: &mut Store<HostState>,
        hostcall_bytes: usize,
    ) -> Result<(), CallError> {
        store.set_hostcall_fuel(hostcall_bytes);
        store
            .set_fuel(self.limits.fuel)
            .map_err(|e| CallError::Host(e.to_string()))?;
        store.set_epoch_deadline(1);
        store.data_mut().turns = super::lanes::CallTurns::new(self.limits.fuel);
        // Running out of a fuel slice is what makes the fuel count visible to the epoch
        // callback (a tight loop keeps it in a register): a call yields once per
        // LONG_CALL_FUEL, which a short call never reaches.
        store
            .fuel_async_yield_interval(Some(super::lanes::LONG_CALL_FUEL))
            .map_err(|e| CallError::Host(e.to_string()))
    }

    /// The log identity of one call.
    fn log(&self, info: &CallInfo) -> GuestLog {
        GuestLog {
            broker: self.name.clone(),
            request_identity: info.request_identity.clone(),
            budget: super::limits::LOGGED_OUTPUT_BYTES,
        }
    }

    /// Sends what the guest wrote to stdout/stderr to the logs, one line per line.
    fn forward_output(&self, store: &mut Store<HostState>) {
        let output = store.data().output.kept();
        if output.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&output);
        let log = &mut store.data_mut().log;
        for line in text.lines() {
            log.write(super::bindings::brokerbox::broker::log::Level::Info, line);
        }
    }
}

/// Counts a guest call when dropped: by then it has ended, or was dropped half-way
/// (`cancelled`).
struct CallRecord<'a> {
    guest: &'a Guest,
    call: &'static str,
    started: std::time::Instant,
    outcome: &'static str,
    fuel: Option<u64>,
}

impl Drop for CallRecord<'_> {
    fn drop(&mut self) {
        use crate::telemetry::metrics::{CallLabels, OutcomeLabels};
        let (labels, metrics) = (&self.guest.labels, &self.guest.metrics);
        let outcome = OutcomeLabels {
            broker: labels.broker.clone(),
            tenant: labels.tenant.clone(),
            call: self.call,
            outcome: self.outcome,
        };
        metrics.calls.get_or_create(&outcome).inc();
        let call = CallLabels {
            broker: outcome.broker,
            tenant: outcome.tenant,
            call: self.call,
        };
        (metrics.seconds.get_or_create(&call)).observe(self.started.elapsed().as_secs_f64());
        if let Some(fuel) = self.fuel {
            // Fuel counts are far below 2^53: exact as f64.
            #[allow(clippy::cast_precision_loss)]
            metrics.fuel.get_or_create(labels).observe(fuel as f64);
        }
    }
}

impl Request {
    /// The guest function this request calls.
    pub fn name(&self) -> &'static str {
        match self {
            Request::ServiceCatalog => "catalog",
            Request::Provision(_) => "provision",
            Request::Update(_) => "update",
            Request::Deprovision(_) => "deprovision",
            Request::Bind(_) => "bind",
            Request::Unbind(_) => "unbind",
            Request::LastOperation(_) => "last_operation",
        }
    }
}

/// Makes the call on `instance` in `store`: looks up and type-checks the one function it calls.
async fn invoke(
    instance: &Instance,
    exports: &OsbExports,
    store: &mut Store<HostState>,
    request: Request,
) -> wasmtime::Result<Result<Response, BrokerError>> {
    /// Calls the function at `$index` with `$args`, mapping its answer with `$wrap`.
    macro_rules! call {
        ($index:expr, ($($arg:ty),*) -> $ok:ty, $args:expr, $wrap:expr) => {{
            let function = instance
                .get_typed_func::<($($arg,)*), (Result<$ok, BrokerError>,)>(&mut *store, $index)?;
            let (answer,) = function.call_async(&mut *store, $args).await?;
            answer.map($wrap)
        }};
    }
    Ok(match request {
        Request::ServiceCatalog => {
            call!(&exports.catalog, () -> ServiceCatalog, (), Response::ServiceCatalog)
        }
        Request::Provision(r) => call!(
            &exports.provision, (&ProvisionRequest) -> InstanceResponse, (&r,), Response::Instance
        ),
        Request::Update(r) => call!(
            &exports.update, (&UpdateRequest) -> InstanceResponse, (&r,), Response::Instance
        ),
        Request::Deprovision(r) => call!(
            &exports.deprovision, (&DeprovisionRequest) -> DeleteResponse, (&r,), Response::Delete
        ),
        Request::Bind(r) => call!(
            &exports.bind, (&BindRequest) -> BindingResponse, (&r,), Response::Binding
        ),
        Request::Unbind(r) => call!(
            &exports.unbind, (&UnbindRequest) -> DeleteResponse, (&r,), Response::Delete
        ),
        Request::LastOperation(r) => call!(
            &exports.last_operation,
            (&LastOperationRequest) -> OperationState,
            (&r,),
            Response::Operation
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies the directory tree `from` to `to`.
    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// A component of the `broker` world of `wit/` (with `bind` answering `bind_answers`),
    /// whose functions all trap: made from the WIT alone.
    fn component(bind_answers: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        copy_dir(&wit, dir.path());
        let contract = dir.path().join("broker.wit");
        let bind = "bind: func(request: bind-request) -> result<binding-response, broker-error>;";
        let text = std::fs::read_to_string(&contract).unwrap();
        assert!(text.contains(bind));
        let changed = bind.replace("binding-response", bind_answers);
        std::fs::write(&contract, text.replace(bind, &changed)).unwrap();
        let mut resolve = wit_parser::Resolve::default();
        let (package, _) = resolve.push_dir(dir.path()).unwrap();
        let world = resolve.select_world(&[package], Some("broker")).unwrap();
        let mut module =
            wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .unwrap();
        wit_component::ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .validate(true)
            .encode()
            .unwrap()
    }

    /// What the first call (the catalog call of a load) of `wasm` fails with.
    async fn first_call_error(wasm: &[u8]) -> String {
        let sandbox = Sandbox::new(super::super::cache::ComponentCache::in_memory(), 4).unwrap();
        let guest = Guest::load(
            &sandbox,
            "b",
            "b",
            wasm,
            Limits::default(),
            Grants::default(),
        )
        .unwrap();
        let error = guest.catalog(&CallInfo::default()).await.unwrap_err();
        error.to_string()
    }

    #[tokio::test]
    async fn a_mistyped_osb_function_fails_the_first_call_even_when_another_is_called() {
        // The functions of the right types are checked and called: the dummy catalog traps.
        let right = first_call_error(&component("binding-response")).await;
        assert!(!right.contains("type mismatch"), "{right}");
        // `bind` answering another type fails the catalog call (the load) before it runs.
        let mistyped = first_call_error(&component("delete-response")).await;
        assert!(mistyped.contains("type mismatch"), "{mistyped}");
    }

    #[test]
    fn the_osb_interface_is_named_with_the_wit_package_version() {
        let wit = include_str!("../../../wit/broker.wit");
        let version = wit
            .lines()
            .find_map(|line| line.strip_prefix("package brokerbox:broker@"))
            .and_then(|rest| rest.strip_suffix(';'))
            .expect("wit/broker.wit names its package");
        assert_eq!(
            super::OSB_INTERFACE,
            format!("brokerbox:broker/osb@{version}")
        );
    }
}
