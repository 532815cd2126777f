"""OSB errors a broker raises. Each class is one case of the contract's `broker-error`, and
so one OSB error response; any other exception a broker raises answers 500 with its message."""

from __future__ import annotations


class BrokerError(Exception):
    """Base of the OSB errors. Raise a subclass; `BrokerError` itself answers 500."""

    #: The case of the WIT `broker-error` variant this class stands for.
    case: str = "internal"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class BadRequest(BrokerError):
    """400 Bad Request: the request is malformed or invalid."""

    case = "bad-request"


class Conflict(BrokerError):
    """409 Conflict: an instance or binding with the same id but other attributes exists."""

    case = "conflict"


class Gone(BrokerError):
    """410 Gone: the instance or binding does not exist."""

    case = "gone"


class AsyncRequired(BrokerError):
    """422 `AsyncRequired`: this request needs `accepts_incomplete=true`."""

    case = "async-required"


class ConcurrencyError(BrokerError):
    """422 `ConcurrencyError`: another operation on the same resource is running."""

    case = "concurrency-error"


class RequiresApp(BrokerError):
    """422 `RequiresApp`: the binding needs an `app_guid`."""

    case = "requires-app"


class MaintenanceInfoConflict(BrokerError):
    """422 `MaintenanceInfoConflict`: the maintenance info does not match."""

    case = "maintenance-info-conflict"


class Unprocessable(BrokerError):
    """422 Unprocessable Entity: the request cannot be carried out as sent."""

    case = "unprocessable"


class Internal(BrokerError):
    """500 Internal Server Error: the broker failed."""

    case = "internal"
