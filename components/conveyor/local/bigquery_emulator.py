"""Run bqemulator (a DuckDB-backed BigQuery emulator) offline, as a child process of the stack.

bqemulator 1.4.0 needs two fixes to serve here (see ../shared/FACTS.md of the project):

- at start-up it runs DuckDB's `INSTALL spatial`, a download that aborts the boot offline:
  replaced by a best-effort `LOAD spatial` (GEOGRAPHY functions then do not work);
- it rejects the `*/*` media type that google-cloud-bigquery sends for small multipart uploads
  (`load_table_from_dataframe` of a small frame): accepted.

Run as `python -m conveyor.local.bigquery_emulator --ready-file F ...`. Once both the REST and
gRPC servers accept connections, the actual ports are written to the ready file as JSON (ports may
be 0, meaning "any free port"). SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

os.environ.setdefault("BQEMU_ENABLE_FORMAT_EXTENSIONS", "false")  # else it tries a download


def apply_offline_fixes() -> None:
    """Patch bqemulator 1.4.0 so that it starts and accepts small uploads offline."""
    from bqemulator.api.routes import upload
    from bqemulator.storage import engine

    def load_spatial_if_present(self) -> None:
        try:
            self._connection.execute("LOAD spatial")
        except Exception as exc:  # absent offline: GEOGRAPHY unsupported
            engine._log.info("spatial extension not loaded", error=str(exc)[:120])

    # setattr: patching the emulator's code on purpose (a method, a module constant)
    setattr(engine.DuckDBEngine, "_load_spatial", load_spatial_if_present)  # noqa: B010
    if "*/*" not in upload._PERMITTED_MEDIA_CONTENT_TYPES:
        setattr(upload, "_PERMITTED_MEDIA_CONTENT_TYPES",  # noqa: B010
                (*upload._PERMITTED_MEDIA_CONTENT_TYPES, "*/*"))


async def _serve(settings, ready_file: Path) -> None:
    from bqemulator.server import EmulatorServer

    server = EmulatorServer(settings)
    await server.start()
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rest_port": server.rest_port, "grpc_port": server.grpc_port,
                               "pid": os.getpid()}))
    os.replace(tmp, ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rest-port", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="persist tables here (default: in memory)")
    parser.add_argument("--project", default="conveyor-local")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    apply_offline_fixes()
    from bqemulator.config import PersistenceMode, Settings

    kwargs = dict(
        rest_host="127.0.0.1", rest_port=args.rest_port,
        grpc_host="127.0.0.1", grpc_port=args.grpc_port,
        default_project_id=args.project, enable_format_extensions=False,
        log_level=args.log_level,
    )
    if args.data_dir:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        kwargs.update(persistence_mode=PersistenceMode.PERSISTENT, data_dir=args.data_dir)
    asyncio.run(_serve(Settings(**kwargs), args.ready_file))


if __name__ == "__main__":
    main()
