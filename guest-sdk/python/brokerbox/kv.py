"""The broker's private key-value store (manifest `[grants] kv = true`), kept by the runtime in
its state store: shared by every call and replica, kept across restarts. Keys are at most 256
bytes, values at most 64 KiB."""

from __future__ import annotations

import json
from typing import Any, Optional

try:  # the runtime's imports: present inside a component build (componentize-py)
    from wit_world.imports import kv as _host
except ImportError:  # imported elsewhere, e.g. by a unit test of a broker's own logic
    _host = None  # type: ignore[assignment]

try:
    from componentize_py_types import Err as _Err
except ImportError:
    _Err = Exception  # type: ignore[assignment,misc]


class KvError(Exception):
    """A key-value call failed; `kind` is "denied", "too-large" or "unavailable"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"kv {kind}: {message}")
        self.kind = kind
        self.message = message


def _call(function: str, *args: Any) -> Any:
    try:
        return getattr(_host, function)(*args)
    except _Err as e:
        kind = {
            "KvError_Denied": "denied",
            "KvError_TooLarge": "too-large",
        }.get(type(e.value).__name__, "unavailable")
        raise KvError(kind, e.value.value) from None


def get(key: str) -> Optional[bytes]:
    """The value of `key`, or `None` when it is not set."""
    return _call("get", key)


def set(key: str, value: bytes) -> None:
    """Sets `key` to `value` (bytes; see `set_json` for anything else)."""
    _call("set", key, bytes(value))


def delete(key: str) -> None:
    """Removes `key`; removing a key that is not set is not an error."""
    _call("delete", key)


def list_keys(prefix: str = "") -> list[str]:
    """The keys that start with `prefix`, in ascending order."""
    return list(_call("list_keys", prefix))


def get_json(key: str) -> Any:
    """The value of `key` parsed as JSON, or `None` when it is not set."""
    value = get(key)
    return None if value is None else json.loads(value)


def set_json(key: str, value: Any) -> None:
    """Sets `key` to `value` as JSON."""
    set(key, json.dumps(value, separators=(",", ":")).encode())
