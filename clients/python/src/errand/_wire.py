"""Requests sent straight to an httpx transport (its connection pool).

httpx's ``Client.request`` runs each request through cookie jars, auth
and redirect flows and event hooks, none of which errand's JSON API uses;
on a 2-core machine that machinery cost more per submit than the server's
whole work (see docs/python.md). The transport is httpx's own, with its
pooling, keep-alive and timeouts; only the layer above it is skipped."""

from __future__ import annotations

import functools
import json
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic_core import to_json

from . import errors


@functools.lru_cache(maxsize=64)
def _url(text: str) -> httpx.URL:
    # Parsing a URL costs about a tenth of a submit; most requests go to a
    # handful of fixed paths (submit, claim, finish...).
    return httpx.URL(text)


def build(
    base: str,
    headers: dict[str, str],
    method: str,
    path: str,
    body: Any = None,
    params: dict[str, Any] | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.Request:
    url = base + path
    if params:
        # doseq: a list is a repeated parameter (tag=a&tag=b).
        url += "?" + urlencode(params, doseq=True)
    content = None
    if body is not None:
        # pydantic's encoder: datetimes, models and the like, at C speed.
        content = to_json(body)
        headers = {**headers, "content-type": "application/json"}
    request = httpx.Request(method, _url(url), headers=headers, content=content)
    if timeout is not None:
        request.extensions["timeout"] = timeout.as_dict()
    return request


def decode(url: str, status: int, content: bytes) -> Any:
    """The answer's JSON, or the typed error a status of 400 or more means."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    if status >= 400:
        raise errors.from_response(status, body)
    if body is None and content:
        raise errors.ErrandError(f"{url} answered {status} with a body that is not JSON")
    return body


def send(transport: httpx.BaseTransport, request: httpx.Request) -> tuple[int, bytes]:
    try:
        response = transport.handle_request(request)
        try:
            return response.status_code, response.read()
        finally:
            response.close()
    except httpx.TransportError as err:
        raise unreachable(request, err) from err


async def asend(transport: httpx.AsyncBaseTransport, request: httpx.Request) -> tuple[int, bytes]:
    try:
        response = await transport.handle_async_request(request)
        try:
            return response.status_code, await response.aread()
        finally:
            await response.aclose()
    except httpx.TransportError as err:
        raise unreachable(request, err) from err


def unreachable(request: httpx.Request, err: Exception) -> errors.ServerUnreachable:
    origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
    return errors.ServerUnreachable(f"cannot reach errand at {origin}: {err}")
