"""The requests a broker receives: the OSB request bodies, with `parameters` and `context` as
`dict`s (empty when the platform sent none) and the call's own facts in `call`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from .catalog import MaintenanceInfo


@dataclass
class OriginatingIdentity:
    """The decoded `X-Broker-API-Originating-Identity` header."""

    #: e.g. "cloudfoundry" or "kubernetes".
    platform: str
    value: dict[str, Any]


@dataclass
class CallInfo:
    """Facts about the call itself."""

    #: True when the platform accepts an asynchronous answer (`accepts_incomplete=true`).
    accepts_incomplete: bool = False
    originating_identity: Optional[OriginatingIdentity] = None
    #: The `X-Broker-API-Request-Identity` of the request, when present.
    request_identity: Optional[str] = None
    #: 1 for the first attempt; higher when the runtime retries an interrupted operation.
    attempt: int = 1


@dataclass
class PreviousValues:
    """OSB `previous_values` of an update."""

    service_id: Optional[str] = None
    plan_id: Optional[str] = None
    organization_id: Optional[str] = None
    space_id: Optional[str] = None
    maintenance_info: Optional[MaintenanceInfo] = None


@dataclass
class BindResource:
    """OSB `bind_resource`: what the binding is for; `raw` is the whole object."""

    app_guid: Optional[str] = None
    route: Optional[str] = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProvisionRequest:
    """`PUT /v2/service_instances/:instance_id`."""

    instance_id: str
    service_id: str
    plan_id: str
    organization_guid: Optional[str] = None
    space_guid: Optional[str] = None
    parameters: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    maintenance_info: Optional[MaintenanceInfo] = None
    call: CallInfo = field(default_factory=CallInfo)


@dataclass
class UpdateRequest:
    """`PATCH /v2/service_instances/:instance_id`; `plan_id` is set when the plan changes."""

    instance_id: str
    service_id: str
    plan_id: Optional[str] = None
    parameters: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    previous_values: Optional[PreviousValues] = None
    maintenance_info: Optional[MaintenanceInfo] = None
    call: CallInfo = field(default_factory=CallInfo)


@dataclass
class DeprovisionRequest:
    """`DELETE /v2/service_instances/:instance_id`."""

    instance_id: str
    service_id: str
    plan_id: str
    call: CallInfo = field(default_factory=CallInfo)


@dataclass
class BindRequest:
    """`PUT .../service_bindings/:binding_id`."""

    instance_id: str
    binding_id: str
    service_id: str
    plan_id: str
    app_guid: Optional[str] = None
    bind_resource: Optional[BindResource] = None
    parameters: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    predecessor_binding_id: Optional[str] = None
    call: CallInfo = field(default_factory=CallInfo)


@dataclass
class UnbindRequest:
    """`DELETE .../service_bindings/:binding_id`."""

    instance_id: str
    binding_id: str
    service_id: str
    plan_id: str
    call: CallInfo = field(default_factory=CallInfo)


class OperationKind(Enum):
    """Which kind of operation a long operation is."""

    PROVISION = "provision"
    UPDATE = "update"
    DEPROVISION = "deprovision"
    BIND = "bind"
    UNBIND = "unbind"


@dataclass
class LastOperationRequest:
    """The runtime asks how a long operation is going. `operation_data` is what the broker
    returned with `Accepted` (or the last `InProgress` that replaced it): a `str`, or the
    `dict`/`list` it was when the broker returned one."""

    instance_id: str
    service_id: str
    plan_id: str
    kind: OperationKind
    operation_data: Any = ""
    binding_id: Optional[str] = None
    call: CallInfo = field(default_factory=CallInfo)
