"""The explorer's HTTP server: uvicorn on its h11 protocol, with a deadline for each request to arrive.

uvicorn closes a connection that idles between requests (its keep-alive timeout), but not one that opens and sends
nothing, or half a request head, or half a body: such a client holds a socket and a task for as long as it likes, and
a few hundred of them starve the explorer. Here a client has `request_seconds` to send a whole request, counted from
when the connection opens or the previous answer ends; the time the model takes to answer does not count."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_SECONDS = 15.0  # ample for the explorer's small requests on a slow link; a stalled client is dropped


class RequestDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing the connection when a request has not fully arrived within the deadline."""

    request_seconds: ClassVar[float] = REQUEST_SECONDS
    deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._request_arrived():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request that has already arrived
        if not self.transport.is_closing() and not self._request_arrived():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _request_arrived(self) -> bool:
        return self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

    def _arm(self) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(self.request_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _too_slow(self) -> None:
        self.deadline = None
        if not self.transport.is_closing():
            self.transport.close()  # no answer: the client is not reading one either


def server_config(app: Any, host: str, port: int, request_seconds: float = REQUEST_SECONDS) -> uvicorn.Config:
    """uvicorn's settings for the explorer: quiet, and on the protocol that enforces the request deadline."""
    protocol = type("RequestDeadline", (RequestDeadline,), {"request_seconds": request_seconds})
    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=protocol)


def serve_app(app: Any, host: str, port: int) -> None:
    """Serve `app` until Ctrl-C."""
    uvicorn.Server(server_config(app, host, port)).run()
