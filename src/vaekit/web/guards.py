"""What the explorer refuses before any model work: a Host it is not serving (DNS rebinding) and a body over the
limit, counted as it arrives so that a chunked upload without Content-Length cannot slip past."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vaekit.errors import VaekitError

MAX_BODY_BYTES = 64 * 1024  # a latent vector of a few thousand numbers fits; anything bigger is refused
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")  # every interface: no single name clients use
HOST_NAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def host_pattern(name: str) -> str:
    """`name` as Starlette's TrustedHostMiddleware matches it: lower case, IPv6 in brackets, no port."""
    name = name.strip().lower()
    if name == "*":
        return name
    literal = name.removeprefix("[").removesuffix("]")
    if ":" in literal:
        try:
            return f"[{ipaddress.IPv6Address(literal)}]"
        except ValueError:
            pass
    elif HOST_NAME.fullmatch(name):
        return name
    raise VaekitError(
        f"host {name!r} cannot be allowed: give a host name or address without scheme or port "
        "(e.g. myhost.local, 192.168.1.5, *.example.org)"
    )


def allowed_hosts(bind: str, extra: Sequence[str] = ()) -> list[str]:
    """The Host names a request may carry: this machine's loopback names, the bound address and `extra`."""
    names = [*LOOPBACK_HOSTS, *(extra if bind in WILDCARD_BINDS else (bind, *extra))]
    return list(dict.fromkeys(host_pattern(name) for name in names))


class LimitBody:
    """Reads the body before the app does and answers 413 as soon as it passes `limit` bytes. The body is small by
    then, so it is replayed to the app from memory; a declared Content-Length over the limit is refused unread."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self.refuse(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self.refuse(scope, receive, send)
                return
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Connection: close, so the server drops the rest of the upload instead of reading it.
        detail = f"request body over {self.limit} bytes: send at most {self.limit} (a latent vector needs a few KB)"
        response = JSONResponse({"detail": detail}, status_code=413, headers={"connection": "close"})
        await response(scope, receive, send)


def problem(error: Mapping[str, Any]) -> str:
    """One line for one pydantic error: where, then what."""
    if error["type"] == "json_invalid":
        return f"body: not JSON ({error['ctx']['error']} at character {error['loc'][-1]}); send a JSON object"
    where = ".".join(str(part) for part in error["loc"] if part not in ("body", "query"))
    return f"{where or 'body'}: {error['msg']}"


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """422 with one readable line per problem, and without echoing the input (NaN cannot even be sent back as JSON)."""
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": "; ".join(problem(e) for e in error.errors())}, status_code=422)


async def http_error(request: Request, error: Exception) -> Response:
    """FastAPI's own answers (404, 405, ...), except that a body it cannot decode is named with its fix."""
    assert isinstance(error, HTTPException)
    if error.status_code == 400:  # raised by FastAPI only when the body is not text it can parse
        detail = "request body is not UTF-8 JSON: send a JSON object with Content-Type: application/json"
        return JSONResponse({"detail": detail}, status_code=400)
    return await http_exception_handler(request, error)
