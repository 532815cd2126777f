"""What the manifest gives the broker: `[env]` values and the granted files directory, asked of
the runtime when the call runs (the interpreter's own `os.environ` was captured at build time)."""

from __future__ import annotations

from typing import Optional, overload

try:  # the runtime's imports: present inside a component build (componentize-py)
    from wit_world.imports import config as _host
except ImportError:  # imported elsewhere, e.g. by a unit test of a broker's own logic
    _host = None  # type: ignore[assignment]


@overload
def config(key: str) -> Optional[str]: ...
@overload
def config(key: str, default: str) -> str: ...
def config(key: str, default: Optional[str] = None) -> Optional[str]:
    """A value from the manifest's `[env]` table, or `default`."""
    value = _host.get(key)
    return default if value is None else value


def files_dir() -> Optional[str]:
    """The broker's own directory (manifest `[grants] files = true`), or `None` without it."""
    return _host.files_dir()
