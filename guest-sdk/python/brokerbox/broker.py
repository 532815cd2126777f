"""The `Broker` base class. Subclass it, implement the operations your service supports, and
export it from your app module with `Osb = export(MyBroker)`."""

from __future__ import annotations

from typing import Any, Optional, Union

from . import errors
from .catalog import Service
from .requests import (
    BindRequest,
    DeprovisionRequest,
    LastOperationRequest,
    ProvisionRequest,
    UnbindRequest,
    UpdateRequest,
)
from .results import Accepted, Binding, Failed, InstanceResult, OperationState

InstanceAnswer = Union[InstanceResult, Accepted, None]
BindAnswer = Union[Binding, dict[str, Any], Accepted]
DeleteAnswer = Optional[Accepted]


class Broker:
    """An OSB broker. The defaults answer the way OSB expects of a broker that does not support
    an operation: update → 422, bind → 400, unbind → done, last_operation → failed.

    Every call runs in a fresh instance of the component: keep nothing in memory between calls.
    What must outlast a call goes into `files_dir()`, `kv`, or a long operation's
    `operation_data`.
    """

    def catalog(self) -> list[Service]:
        """The services and plans. Called once when the runtime loads the broker."""
        raise NotImplementedError("a broker must define catalog()")

    def provision(self, request: ProvisionRequest) -> InstanceAnswer:
        """Creates an instance: `None`/`InstanceResult` when done, `Accepted` to finish later."""
        raise NotImplementedError("a broker must define provision()")

    def update(self, request: UpdateRequest) -> InstanceAnswer:
        """Updates an instance. By default updates are refused with 422."""
        raise errors.Unprocessable("this broker does not support updating instances")

    def deprovision(self, request: DeprovisionRequest) -> DeleteAnswer:
        """Deletes an instance: `None` when done, `Accepted` to finish later."""
        raise NotImplementedError("a broker must define deprovision()")

    def bind(self, request: BindRequest) -> BindAnswer:
        """Creates a binding: credentials (`dict`) or a `Binding`, or `Accepted`.
        By default bindings are refused with 400 (the service is not bindable)."""
        raise errors.BadRequest("this broker does not support bindings")

    def unbind(self, request: UnbindRequest) -> DeleteAnswer:
        """Deletes a binding. By default there is nothing to clean up, so it succeeds."""
        return None

    def last_operation(self, request: LastOperationRequest) -> OperationState:
        """How a long operation is going. Only called for operations that returned `Accepted`;
        by default there are none, so it fails the operation."""
        return Failed("this broker has no long operations")


def export(broker: type[Broker]) -> type:
    """The class componentize-py exports as the contract's `osb` interface. In the app module:
    `Osb = export(MyBroker)`."""
    from ._wit import exporter

    return exporter(broker)
