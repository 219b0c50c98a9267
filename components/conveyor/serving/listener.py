"""How `conveyor serve` listens: uvicorn with deadlines and a connection limit, its log lines,
and the command-line flags that set them.

    --read-timeout SECONDS   a request, headers and body, must arrive whole within this long of
                             its first byte, else 408 and the connection is closed (default 30):
                             a slow or stalled client (slow-loris) cannot hold a connection
    --idle-timeout SECONDS   a connection with no request under way (before the first, between
                             keep-alive requests) is closed after this long (default 60)
    --max-connections N      open connections at most (default 1000); a new one past it closes
                             the connection idle the longest, or, if none is, gets 503

The deadlines are kept per connection by `conveyor.serving.guard` (uvicorn has only the idle
one, and only after a first answer). This module imports nothing heavy: the command line shows
the defaults without loading uvicorn.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from conveyor.errors import InputError

log = logging.getLogger("conveyor.serve")
FILES_BESIDE_CONNECTIONS = 256  # file descriptors the server needs besides its connections


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a request may take to arrive, a connection may idle, and how many are open."""

    read_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_connections: int = 1000

    def check(self) -> None:
        """InputError naming the flag of a value that is not usable."""
        for flag, value in (("--read-timeout", self.read_timeout),
                            ("--idle-timeout", self.idle_timeout)):
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise InputError(f"{flag}: expected a positive number of seconds, got {value!r}")
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise InputError(f"--max-connections: expected a whole number of at least 1, got "
                             f"{self.max_connections!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`conveyor serve`'s "connections" flags (see the module)."""
    d = ConnectionLimits()
    group = parser.add_argument_group("connections", "deadlines and limits of the HTTP "
                                      "connections (slow clients, idle keep-alives)")
    group.add_argument("--read-timeout", type=float, default=d.read_timeout, metavar="SECONDS",
                       help="a request (headers and body) must arrive whole within this many "
                            "seconds of its first byte, else 408 and the connection is closed "
                            f"(default {d.read_timeout:g})")
    group.add_argument("--idle-timeout", type=float, default=d.idle_timeout, metavar="SECONDS",
                       help="a connection with no request under way is closed after this many "
                            f"seconds (default {d.idle_timeout:g})")
    group.add_argument("--max-connections", type=int, default=d.max_connections, metavar="N",
                       help="open connections at most; past it the one idle the longest is "
                            f"closed, else the new one gets 503 (default {d.max_connections})")


def limits_of(args: argparse.Namespace) -> ConnectionLimits:
    limits = ConnectionLimits(args.read_timeout, args.idle_timeout, args.max_connections)
    limits.check()
    return limits


def run(app: Any, host: str, port: int, limits: ConnectionLimits, registry: Any) -> None:
    """Serve `app` with uvicorn until SIGTERM or SIGINT, with `limits` (counted in the
    Prometheus `registry`). Returns after uvicorn's graceful shutdown: the caller cleans up."""
    import uvicorn

    from conveyor.serving.guard import protocol_for

    protocol = protocol_for(limits, registry)
    _files_for(limits.max_connections)

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    # uvicorn shuts down gracefully on SIGTERM, then raises it again with the handler that was
    # set before it ran: with the default one the process would end without the caller's
    # cleanup. (Handlers can only be set in the main thread; uvicorn handles none elsewhere.)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    # uvicorn's own keep-alive deadline is set past the guard's, which closes (and counts) first.
    uvicorn.run(app, host=host, port=port, log_level="warning", http=protocol,
                timeout_keep_alive=math.ceil(limits.idle_timeout) + 1)


def _files_for(connections: int) -> None:
    """Raise the soft limit of open files (up to the hard one) so `connections` fit; a line
    if they cannot (past it, new connections fail to be accepted until some close)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + FILES_BESIDE_CONNECTIONS
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < needed:
        log.warning("--max-connections %d: only %d files may be open (ulimit -n); connections "
                    "past about %d will wait to be accepted", connections, target,
                    target - FILES_BESIDE_CONNECTIONS)


def log_to_stderr() -> None:
    """conveyor serve's own lines (swaps, skipped versions, polling errors) on stderr, one line
    each with a UTC timestamp, unless the process configured logging already."""
    logger = logging.getLogger("conveyor.serve")
    if logger.handlers or logging.getLogger().handlers:
        logger.setLevel(logging.INFO)
        return
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                  "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
