"""Logging into the runtime's logs; the runtime adds the broker name and the request identity.
Anything printed to stdout or stderr reaches the logs too."""

from __future__ import annotations

try:  # the runtime's imports: present inside a component build (componentize-py)
    from wit_world.imports import log as _host
except ImportError:  # imported elsewhere, e.g. by a unit test of a broker's own logic
    _host = None  # type: ignore[assignment]


def _write(level: str, message: str) -> None:
    _host.write(getattr(_host.Level, level), message)


def debug(message: str) -> None:
    """Logs a debugging message."""
    _write("DEBUG", message)


def info(message: str) -> None:
    """Logs an informational message."""
    _write("INFO", message)


def warn(message: str) -> None:
    """Logs a warning."""
    _write("WARN", message)


def error(message: str) -> None:
    """Logs an error."""
    _write("ERROR", message)
