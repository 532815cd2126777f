"""What operations return.

- `provision` / `update`: `None` or an `InstanceResult` when done; `Accepted(...)` to finish later.
- `bind`: a `dict` of credentials or a `Binding` when done; `Accepted(...)` to finish later.
- `deprovision` / `unbind`: `None` when done; `Accepted(...)` to finish later.
- `last_operation`: `InProgress(...)`, `Succeeded(...)` or `Failed(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union


@dataclass
class InstanceResult:
    """A finished provision or update: an optional dashboard URL and OSB instance metadata."""

    dashboard_url: Optional[str] = None
    #: OSB instance `metadata`: `{"labels": {...}, "attributes": {...}}`.
    metadata: Optional[dict[str, Any]] = None


@dataclass
class Accepted:
    """An operation started but not finished: the runtime answers 202 and polls
    `last_operation`, handing back `operation_data` (a string, or anything JSON can hold)."""

    operation_data: Union[str, dict[str, Any], list[Any], None] = ""
    #: For a provision or update: what is known already.
    dashboard_url: Optional[str] = None
    metadata: Optional[dict[str, Any]] = None


@dataclass
class VolumeMount:
    """OSB `volume_mounts` entry of a binding."""

    driver: str
    container_dir: str
    #: "r" or "rw".
    mode: str
    volume_id: str
    device_type: str = "shared"
    mount_config: Optional[dict[str, Any]] = None


@dataclass
class Endpoint:
    """OSB `endpoints` entry of a binding: where the application connects."""

    host: str
    ports: list[str] = field(default_factory=list)
    #: "tcp", "udp" or "all".
    protocol: Optional[str] = None


@dataclass
class Binding:
    """A finished bind. Returning a plain `dict` from `bind` means `Binding(credentials=dict)`."""

    credentials: Optional[dict[str, Any]] = None
    syslog_drain_url: Optional[str] = None
    route_service_url: Optional[str] = None
    volume_mounts: list[VolumeMount] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    #: When the credentials expire (ISO 8601), if they do.
    expires_at: Optional[str] = None
    #: When the platform should rotate the binding (ISO 8601).
    renew_before: Optional[str] = None


@dataclass
class InProgress:
    """A long operation still running; `operation_data`, when set, replaces the stored data."""

    description: Optional[str] = None
    operation_data: Union[str, dict[str, Any], list[Any], None] = None


@dataclass
class Succeeded:
    """A long operation that finished well. For a bind, `binding` (or a credentials `dict`)
    is the finished binding; for a provision or update, `instance` its final result."""

    description: Optional[str] = None
    binding: Union[Binding, dict[str, Any], None] = None
    instance: Optional[InstanceResult] = None


@dataclass
class Failed:
    """A long operation that failed. `instance_usable` (update, deprovision) and
    `update_repeatable` (update) tell the platform what state the instance is in."""

    description: str
    instance_usable: Optional[bool] = None
    update_repeatable: Optional[bool] = None


OperationState = Union[InProgress, Succeeded, Failed]
