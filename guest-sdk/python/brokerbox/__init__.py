"""Write an Open Service Broker (OSB) in Python as a WebAssembly component for brokerbox.

Subclass `Broker`, implement the operations your service supports, end the module with
`Osb = export(MyBroker)`, and build it with `brokerbox`'s `scripts/build-guests` (or
`componentize-py -d wit -w broker componentize -p guest-sdk/python -p . app -o app.wasm`).
The runtime serves the OSB HTTP API, checks versions, credentials and ids, keeps state and
runs long operations; the broker only says what its catalog is and what each operation does.
"""

from . import http, kv, log
from .broker import Broker, export
from .catalog import DashboardClient, MaintenanceInfo, Plan, Service
from .env import config, files_dir
from .errors import (
    AsyncRequired,
    BadRequest,
    BrokerError,
    ConcurrencyError,
    Conflict,
    Gone,
    Internal,
    MaintenanceInfoConflict,
    RequiresApp,
    Unprocessable,
)
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

__all__ = [
    "Accepted", "AsyncRequired", "BadRequest", "BindRequest", "BindResource", "Binding",
    "Broker", "BrokerError", "CallInfo", "ConcurrencyError", "Conflict", "DashboardClient",
    "DeprovisionRequest", "Endpoint", "Failed", "Gone", "InProgress", "InstanceResult",
    "Internal", "LastOperationRequest", "MaintenanceInfo", "MaintenanceInfoConflict",
    "OperationKind", "OriginatingIdentity", "Plan", "PreviousValues", "ProvisionRequest",
    "RequiresApp", "Service", "Succeeded", "UnbindRequest", "Unprocessable", "UpdateRequest",
    "VolumeMount", "config", "export", "files_dir", "http", "kv", "log",
]
