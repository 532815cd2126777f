"""Outbound HTTP over `wasi:http`, for brokers that call a cloud API. The runtime allows only the
hosts listed in the manifest's `[grants] outbound_http`; anything else fails with an `HttpError`
naming `HttpRequestDenied` before a connection is made.

    response = http.get("https://api.example.com/v1/databases")
    if response.status == 200: ... response.json() ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

try:  # the runtime's imports: present inside a component build (componentize-py)
    from componentize_py_types import Err as _Err
    from wit_world.imports import outgoing_handler as _handler
    from wit_world.imports import streams as _streams
    from wit_world.imports import wasi_http_types as _h
except ImportError:  # imported elsewhere, e.g. by a unit test of a broker's own logic
    _handler = _streams = _h = None  # type: ignore[assignment]
    _Err = Exception  # type: ignore[assignment,misc]

#: Largest response body read, in bytes; a longer one is an error.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class HttpError(Exception):
    """The request could not be made or answered (malformed URL, host not granted, network)."""


@dataclass
class Response:
    """An HTTP response."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def get(url: str, headers: Optional[dict[str, str]] = None) -> Response:
    """Sends a GET request to `url` (`http://` or `https://`)."""
    return request("GET", url, headers=headers)


#: Most redirects (301, 302, 303, 307, 308) one request follows.
MAX_REDIRECTS = 5


def request(
    method: str,
    url: str,
    body: Optional[bytes | str | dict | list] = None,
    headers: Optional[dict[str, str]] = None,
) -> Response:
    """Sends a request; a `dict` or `list` body is sent as JSON. Follows up to
    `MAX_REDIRECTS` redirects: a 307 or 308 with the same method and body, the others as a GET.
    Each redirect is a new request, which the runtime checks against the allowlist again; one
    to another origin does not carry the `authorization` and `cookie` headers."""
    if _h is None:
        raise HttpError("outbound HTTP is only available inside a brokerbox component")
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("content-type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    for _ in range(MAX_REDIRECTS + 1):
        response = _send(method, url, body, headers)
        location = response.headers.get("location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return response
        dropped = set()
        if response.status not in (307, 308):
            method, body, dropped = "GET", None, {"content-type"}
        target = _resolve(url, location)
        if _origin(target) != _origin(url):
            dropped |= {"authorization", "cookie"}
        headers = {k: v for k, v in headers.items() if k.lower() not in dropped}
        url = target
    raise HttpError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")


def _origin(url: str) -> str:
    """`scheme://authority` of `url`."""
    scheme, _, rest = url.partition("://")
    return f"{scheme.lower()}://{rest.split('/', 1)[0].lower()}"


def _resolve(base: str, location: str) -> str:
    """`location` (absolute, or a path on `base`'s origin) as a URL."""
    if "://" in location:
        return location
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    path = location if location.startswith("/") else "/" + location
    return f"{scheme}://{authority}{path}"


def _send(method: str, url: str, body: Optional[bytes], headers: dict[str, str]) -> Response:
    """One request, its redirect not followed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise HttpError(f"the URL needs http:// or https://: {url}")
    authority, slash, path = rest.partition("/")
    methods = {
        "GET": _h.Method_Get(), "POST": _h.Method_Post(), "PUT": _h.Method_Put(),
        "PATCH": _h.Method_Patch(), "DELETE": _h.Method_Delete(), "HEAD": _h.Method_Head(),
    }
    try:
        fields = _h.Fields.from_list([(k, v.encode()) for k, v in headers.items()])
        outgoing = _h.OutgoingRequest(fields)
        outgoing.set_method(methods.get(method.upper(), _h.Method_Other(method)))
        outgoing.set_scheme(_h.Scheme_Https() if scheme == "https" else _h.Scheme_Http())
        outgoing.set_authority(authority)
        outgoing.set_path_with_query(slash + path if slash else "/")
        outgoing_body = outgoing.body()
        if body:
            stream = outgoing_body.write()
            for at in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[at : at + 4096])
            stream.__exit__(None, None, None)
        _h.OutgoingBody.finish(outgoing_body, None)
        future = _handler.handle(outgoing, None)
        pollable = future.subscribe()
        pollable.block()
        pollable.__exit__(None, None, None)
        answer = future.get()
    except _Err as e:
        raise HttpError(f"{method} {url} failed: {_describe(e.value)}") from None
    if answer is None:
        raise HttpError(f"{method} {url}: no response")
    if isinstance(answer, _Err):
        raise HttpError(f"{method} {url}: the response was already taken")
    inner = answer.value
    if isinstance(inner, _Err):
        raise HttpError(f"{method} {url} failed: {_describe(inner.value)}")
    response = inner.value
    status = response.status()
    fields = response.headers()
    response_headers = {
        name: value.decode("utf-8", "replace") for name, value in fields.entries()
    }
    # Child resources are released before their parents, as wasi:http requires.
    fields.__exit__(None, None, None)
    incoming = response.consume()
    stream = incoming.stream()
    data = bytearray()
    while True:
        try:
            chunk = stream.blocking_read(64 * 1024)
        except _Err as e:
            if isinstance(e.value, _streams.StreamError_Closed):
                break
            raise HttpError(f"{method} {url}: reading the body failed") from None
        data.extend(chunk)
        if len(data) > MAX_RESPONSE_BYTES:
            raise HttpError(f"{method} {url}: the body is over {MAX_RESPONSE_BYTES} bytes")
    stream.__exit__(None, None, None)
    incoming.__exit__(None, None, None)
    response.__exit__(None, None, None)
    future.__exit__(None, None, None)
    return Response(status, bytes(data), response_headers)


def _describe(error: Any) -> str:
    """`HttpRequestDenied` and the like, from a wasi:http error-code case."""
    name = type(error).__name__
    return name.split("_", 1)[-1] if "_" in name else name
