"""Conversions between the SDK's types and the bindings componentize-py generates from the WIT
(`wit_world`). Imported only inside a component build, where those bindings exist."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from componentize_py_types import Err
try:  # named `types` in the `broker` world, renamed beside wasi:http's own `types`
    from wit_world.imports import brokerbox_broker_types as t
except ImportError:
    from wit_world.imports import types as t  # type: ignore[no-redef]

from . import errors
from .catalog import MaintenanceInfo, Plan, Service
from .requests import (
    BindRequest,
    BindResource,
    CallInfo,
    DeprovisionRequest,
    LastOperationRequest,
    OperationKind,
    OriginatingIdentity,
    PreviousValues,
    ProvisionRequest,
    UnbindRequest,
    UpdateRequest,
)
from .results import (
    Accepted,
    Binding,
    Endpoint,
    Failed,
    InProgress,
    InstanceResult,
    Succeeded,
    VolumeMount,
)

# Operation data that is not a plain string travels as JSON behind this tag, so a broker gets
# back the `dict` it returned; a string that happens to start with a tag is tagged as a string.
_JSON_TAG = "brokerbox-json:"
_STR_TAG = "brokerbox-str:"


def _dumps(value: Any) -> Optional[str]:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _loads(text: Optional[str], what: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise errors.BadRequest(f"invalid {what}: {e}") from None
    return value if isinstance(value, dict) else {}


def _encode_data(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        tagged = value.startswith(_JSON_TAG) or value.startswith(_STR_TAG)
        return _STR_TAG + value if tagged else value
    return _JSON_TAG + json.dumps(value, separators=(",", ":"))


def _decode_data(text: str) -> Any:
    if text.startswith(_JSON_TAG):
        return json.loads(text[len(_JSON_TAG) :])
    if text.startswith(_STR_TAG):
        return text[len(_STR_TAG) :]
    return text


def _maintenance(m: Optional[Any]) -> Optional[MaintenanceInfo]:
    return None if m is None else MaintenanceInfo(m.version, m.description)


def _wit_maintenance(m: Optional[MaintenanceInfo]) -> Optional[t.MaintenanceInfo]:
    return None if m is None else t.MaintenanceInfo(m.version, m.description)


def _call(c: t.CallInfo) -> CallInfo:
    identity = None
    if c.originating_identity is not None:
        identity = OriginatingIdentity(
            c.originating_identity.platform,
            _loads(c.originating_identity.value, "originating identity"),
        )
    return CallInfo(c.accepts_incomplete, identity, c.request_identity, c.attempt)


def _wit_plan(p: Plan) -> t.Plan:
    return t.Plan(
        id=p.id,
        name=p.name,
        description=p.description,
        metadata=_dumps(p.metadata),
        free=p.free,
        bindable=p.bindable,
        plan_updateable=p.plan_updateable,
        schemas=_dumps(p.schemas),
        maximum_polling_duration=p.maximum_polling_duration,
        maintenance_info=_wit_maintenance(p.maintenance_info),
        binding_rotatable=p.binding_rotatable,
    )


def _wit_service(s: Service) -> t.Service:
    client = s.dashboard_client
    return t.Service(
        id=s.id,
        name=s.name,
        description=s.description,
        tags=list(s.tags),
        requires=list(s.requires),
        bindable=s.bindable,
        instances_retrievable=s.instances_retrievable,
        bindings_retrievable=s.bindings_retrievable,
        allow_context_updates=s.allow_context_updates,
        metadata=_dumps(s.metadata),
        dashboard_client=None
        if client is None
        else t.DashboardClient(client.id, client.secret, client.redirect_uri),
        plan_updateable=s.plan_updateable,
        binding_rotatable=s.binding_rotatable,
        plans=[_wit_plan(p) for p in s.plans],
    )


def _wit_instance(r: Optional[InstanceResult]) -> t.InstanceResult:
    r = r or InstanceResult()
    return t.InstanceResult(r.dashboard_url, _dumps(r.metadata))


def _wit_instance_response(answer: Any) -> t.InstanceResponse:
    if isinstance(answer, Accepted):
        result = InstanceResult(answer.dashboard_url, answer.metadata)
        return t.InstanceResponse_Accepted(
            t.InstanceAccepted(_encode_data(answer.operation_data), _wit_instance(result))
        )
    if answer is None or isinstance(answer, InstanceResult):
        return t.InstanceResponse_Done(_wit_instance(answer))
    raise TypeError(f"provision/update returned {type(answer).__name__}, not InstanceResult/Accepted/None")


def _wit_binding(b: Any) -> t.BindingResult:
    if isinstance(b, dict):
        b = Binding(credentials=b)
    if not isinstance(b, Binding):
        raise TypeError(f"bind returned {type(b).__name__}, not a dict, Binding or Accepted")
    mounts = [
        t.VolumeMount(
            m.driver,
            m.container_dir,
            t.VolumeMode.RW if m.mode == "rw" else t.VolumeMode.R,
            m.device_type,
            m.volume_id,
            _dumps(m.mount_config),
        )
        for m in b.volume_mounts
    ]
    endpoints = [t.Endpoint(e.host, list(e.ports), e.protocol) for e in b.endpoints]
    return t.BindingResult(
        _dumps(b.credentials),
        b.syslog_drain_url,
        b.route_service_url,
        mounts,
        endpoints,
        b.expires_at,
        b.renew_before,
    )


def _wit_delete(answer: Any) -> t.DeleteResponse:
    if answer is None:
        return t.DeleteResponse_Done()
    if isinstance(answer, Accepted):
        return t.DeleteResponse_Accepted(_encode_data(answer.operation_data))
    raise TypeError(f"deprovision/unbind returned {type(answer).__name__}, not None or Accepted")


def _wit_state(state: Any) -> t.OperationState:
    if isinstance(state, InProgress):
        data = None if state.operation_data is None else _encode_data(state.operation_data)
        return t.OperationState_InProgress(t.Progress(state.description, data))
    if isinstance(state, Succeeded):
        binding = None if state.binding is None else _wit_binding(state.binding)
        instance = None if state.instance is None else _wit_instance(state.instance)
        return t.OperationState_Succeeded(t.Success(state.description, binding, instance))
    if isinstance(state, Failed):
        return t.OperationState_Failed(
            t.Failure(state.description, state.instance_usable, state.update_repeatable)
        )
    raise TypeError(f"last_operation returned {type(state).__name__}, not InProgress/Succeeded/Failed")


_ERRORS = {
    "bad-request": t.BrokerError_BadRequest,
    "conflict": t.BrokerError_Conflict,
    "gone": t.BrokerError_Gone,
    "async-required": t.BrokerError_AsyncRequired,
    "concurrency-error": t.BrokerError_ConcurrencyError,
    "requires-app": t.BrokerError_RequiresApp,
    "maintenance-info-conflict": t.BrokerError_MaintenanceInfoConflict,
    "unprocessable": t.BrokerError_Unprocessable,
    "internal": t.BrokerError_Internal,
}


def _guarded(work: Callable[[], Any]) -> Any:
    """Runs `work`, turning SDK errors into the WIT error and any other exception into a 500
    that carries its message."""
    try:
        return work()
    except Err:
        raise
    except errors.BrokerError as e:
        raise Err(_ERRORS.get(e.case, t.BrokerError_Internal)(e.message)) from None
    except Exception as e:  # noqa: BLE001 - every other failure is the broker's 500
        raise Err(t.BrokerError_Internal(f"{type(e).__name__}: {e}")) from None


def exporter(broker_class: type) -> type:
    """The class implementing the generated `Osb` protocol around an instance of `broker_class`."""

    class Osb:
        def __init__(self) -> None:
            self.broker = broker_class()

        def catalog(self) -> t.ServiceCatalog:
            def work() -> t.ServiceCatalog:
                services = self.broker.catalog()
                if isinstance(services, Service):
                    services = [services]
                return t.ServiceCatalog([_wit_service(s) for s in services])

            return _guarded(work)

        def provision(self, r: t.ProvisionRequest) -> t.InstanceResponse:
            def work() -> t.InstanceResponse:
                request = ProvisionRequest(
                    r.instance_id,
                    r.service_id,
                    r.plan_id,
                    r.organization_guid,
                    r.space_guid,
                    _loads(r.parameters, "parameters"),
                    _loads(r.context, "context"),
                    _maintenance(r.maintenance_info),
                    _call(r.call),
                )
                return _wit_instance_response(self.broker.provision(request))

            return _guarded(work)

        def update(self, r: t.UpdateRequest) -> t.InstanceResponse:
            def work() -> t.InstanceResponse:
                p = r.previous_values
                previous = None
                if p is not None:
                    previous = PreviousValues(
                        p.service_id,
                        p.plan_id,
                        p.organization_id,
                        p.space_id,
                        _maintenance(p.maintenance_info),
                    )
                request = UpdateRequest(
                    r.instance_id,
                    r.service_id,
                    r.plan_id,
                    _loads(r.parameters, "parameters"),
                    _loads(r.context, "context"),
                    previous,
                    _maintenance(r.maintenance_info),
                    _call(r.call),
                )
                return _wit_instance_response(self.broker.update(request))

            return _guarded(work)

        def deprovision(self, r: t.DeprovisionRequest) -> t.DeleteResponse:
            def work() -> t.DeleteResponse:
                request = DeprovisionRequest(r.instance_id, r.service_id, r.plan_id, _call(r.call))
                return _wit_delete(self.broker.deprovision(request))

            return _guarded(work)

        def bind(self, r: t.BindRequest) -> t.BindingResponse:
            def work() -> t.BindingResponse:
                resource = None
                if r.bind_resource is not None:
                    b = r.bind_resource
                    resource = BindResource(b.app_guid, b.route, _loads(b.raw, "bind_resource"))
                request = BindRequest(
                    r.instance_id,
                    r.binding_id,
                    r.service_id,
                    r.plan_id,
                    r.app_guid,
                    resource,
                    _loads(r.parameters, "parameters"),
                    _loads(r.context, "context"),
                    r.predecessor_binding_id,
                    _call(r.call),
                )
                answer = self.broker.bind(request)
                if isinstance(answer, Accepted):
                    return t.BindingResponse_Accepted(_encode_data(answer.operation_data))
                return t.BindingResponse_Done(_wit_binding(answer))

            return _guarded(work)

        def unbind(self, r: t.UnbindRequest) -> t.DeleteResponse:
            def work() -> t.DeleteResponse:
                request = UnbindRequest(
                    r.instance_id, r.binding_id, r.service_id, r.plan_id, _call(r.call)
                )
                return _wit_delete(self.broker.unbind(request))

            return _guarded(work)

        def last_operation(self, r: t.LastOperationRequest) -> t.OperationState:
            def work() -> t.OperationState:
                request = LastOperationRequest(
                    r.instance_id,
                    r.service_id,
                    r.plan_id,
                    OperationKind[r.kind.name],
                    _decode_data(r.operation_data),
                    r.binding_id,
                    _call(r.call),
                )
                return _wit_state(self.broker.last_operation(request))

            return _guarded(work)

    Osb.__name__ = "Osb"
    Osb.__qualname__ = "Osb"
    return Osb
