"""uvicorn's HTTP/1.1 protocol (h11) with the deadlines and the connection limit it lacks.

uvicorn 0.54 closes a connection left idle after a response (`timeout_keep_alive`) and nothing
else: a client that connects and sends half a request line, half its headers or half its body
holds the connection, a task and its buffers forever (the slow-loris attack; 300 such requests
were all still open after 65 s). `limit_concurrency` does not help: it counts those connections
and answers 503 to the honest clients once they fill it.

`GuardedH11Protocol` gives every connection one deadline at a time, by what it is doing:

- *receiving* a request (its first byte has come, not its last): the whole request, headers and
  body, must arrive within `read_timeout` seconds of its first byte. Dribbling a byte now and
  then does not extend it. When it passes, the client gets `408 Request Timeout` (TF Serving's
  error shape, if no answer was started) and the connection is closed;
- *idle* (connected, no request under way, before the first or between keep-alive requests):
  closed after `idle_timeout` seconds;
- *busy* (the request is whole, the model is answering): no deadline; uvicorn's own
  graceful shutdown and the model's speed bound it.

When a new connection would pass `max_connections`, the connection idle the longest is closed
to make room; if none is idle, the new one gets `503` (with `Retry-After: 1`) and is closed, so
the server's memory and file descriptors stay bounded and the connections that are mid-request
are not dropped. Each closing is counted: `conveyor_serving_connections_closed_total{reason=
"read_timeout"|"idle_timeout"|"evicted"|"over_limit"}`, and the open connections are
`conveyor_serving_open_connections`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, ClassVar

import h11
from prometheus_client import CollectorRegistry, Counter, Gauge
from uvicorn.protocols.http.h11_impl import H11Protocol

from conveyor.serving.listener import ConnectionLimits

log = logging.getLogger("conveyor.serve")
ABORT_AFTER = 1.0  # seconds a closed connection may take to flush its last answer


class ConnectionStats:
    """The guard's counters, in the server's Prometheus registry."""

    def __init__(self, registry: CollectorRegistry):
        self.closed = Counter("conveyor_serving_connections_closed", "Connections the server "
                              "closed on a deadline or the connection limit, by reason",
                              ["reason"], registry=registry)
        for reason in ("read_timeout", "idle_timeout", "evicted", "over_limit"):
            self.closed.labels(reason)
        self.open = Gauge("conveyor_serving_open_connections", "Open HTTP connections",
                          registry=registry)


RECEIVING, IDLE, BUSY = "receiving", "idle", "busy"


class GuardedH11Protocol(H11Protocol):
    """One connection (see the module). `protocol_for` makes the class uvicorn is given."""

    limits: ClassVar[ConnectionLimits]
    stats: ClassVar[ConnectionStats]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._phase = BUSY
        self._since = 0.0  # monotonic time the phase began
        self._deadline: asyncio.TimerHandle | None = None

    # -- uvicorn's events ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.stats.open.inc()
        self._update()
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self.stats.closed.labels("over_limit").inc()
            self._answer(503, "Service Unavailable",
                         f"the server has its limit of {self.limits.max_connections} "
                         "connections open (--max-connections); retry", retry_after=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.stats.open.dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._update()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._update()

    # -- the deadlines -------------------------------------------------------------------------

    def _current_phase(self) -> str:
        their = self.conn.their_state
        if their is h11.SEND_BODY or (their is h11.IDLE and self.conn.trailing_data[0]):
            return RECEIVING
        if their is h11.IDLE and self.conn.our_state is h11.IDLE:
            return IDLE
        return BUSY

    def _update(self) -> None:
        """Arm the deadline of the phase the connection is in, if it changed (a phase keeps
        the deadline it started with, however many bytes trickle in)."""
        if self.transport is None or self.transport.is_closing():
            return
        phase = self._current_phase()
        if phase == self._phase:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase, self._since = phase, time.monotonic()
        seconds = {RECEIVING: self.limits.read_timeout, IDLE: self.limits.idle_timeout}.get(phase)
        if seconds is not None:
            self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if phase == IDLE:
            self.stats.closed.labels("idle_timeout").inc()
            self._close()
            return
        self.stats.closed.labels("read_timeout").inc()
        cycle = self.cycle
        unanswered = (self.conn.their_state is h11.IDLE  # half a request line or headers
                      or (self.conn.our_state is h11.SEND_RESPONSE and cycle is not None
                          and not cycle.response_started))
        if not unanswered:
            self._close()
            return
        self._answer(408, "Request Timeout",
                     f"the request did not arrive whole within {self.limits.read_timeout:g} s "
                     "of its first byte (--read-timeout)")

    def _make_room(self) -> bool:
        """Close the connection idle the longest, if any; whether one was."""
        idle = [c for c in self.connections
                if isinstance(c, GuardedH11Protocol) and c is not self and c._phase == IDLE
                and not c.transport.is_closing()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._since)
        self.stats.closed.labels("evicted").inc()
        oldest._close()
        return True

    # -- closing -------------------------------------------------------------------------------

    def _answer(self, status: int, reason: str, message: str, retry_after: bool = False) -> None:
        """Write a whole error answer straight to the socket and close the connection. Written
        past h11 on purpose: h11 cannot answer a request whose head it has not read, and the
        connection ends here anyway. The request's task, if any, sees the client gone."""
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n"
                + ("retry-after: 1\r\n" if retry_after else "") + "\r\n")
        self.transport.write(head.encode() + body)
        self._close()

    def _close(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        self.transport.close()
        # A client that reads nothing could keep a closing socket's last bytes unsent forever.
        self.loop.call_later(ABORT_AFTER, self.transport.abort)


def protocol_for(limits: ConnectionLimits,
                 registry: CollectorRegistry) -> type[GuardedH11Protocol]:
    """The protocol class to give uvicorn (`http=`), bound to these limits and counters."""
    limits.check()
    stats = ConnectionStats(registry)
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"limits": limits, "stats": stats})
