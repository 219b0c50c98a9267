"""The `conveyor` command line.

    conveyor local up|down|status|env|seed   the embedded emulator stack and its data
    conveyor compile [NAME ...]              regenerate compiled component and pipeline specs
    conveyor images                          the image URIs of this version
    conveyor submit|schedule PIPELINE        on Kubeflow Pipelines (--host) or Vertex AI (--vertex)
    conveyor serve --model-base-path P --model-name N   TF Serving's REST API on loopback
    conveyor run --local / conveyor demo     the embedded default, start to prediction

Errors are one line on stderr (exit 2 for bad input, 1 otherwise); `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conveyor.errors import ConveyorError, InputError
from conveyor.version import __version__


def _local(args: argparse.Namespace) -> int:
    from conveyor.local import LocalStack, seed

    stack = LocalStack(args.root, project=args.project)
    if args.action == "up":
        info = stack.up()
        print(f"BigQuery   {info.bigquery_endpoint} (Storage Read gRPC {info.bigquery_storage_endpoint})")
        print(f"GCS        {info.gcs_endpoint}")
        print(f"data       {info.root}")
        print("point a shell at it with:  eval \"$(conveyor local env)\"")
    elif args.action == "down":
        print("stopped" if stack.down() else f"no stack recorded under {stack.root}")
    elif args.action == "status":
        info = stack.status()
        if info is None:
            print(f"not running (root {stack.root})")
            return 3
        print(f"running: BigQuery {info.bigquery_endpoint}, GCS {info.gcs_endpoint}, "
              f"data {info.root}")
    elif args.action == "env":
        info = stack.status()
        if info is None:
            raise ConveyorError(f"no stack running under {stack.root}; run `conveyor local up`")
        for key, value in info.environ().items():
            print(f"export {key}={value}")
    elif args.action == "seed":
        info = stack.status()
        if info is None:
            raise ConveyorError(f"no stack running under {stack.root}; run `conveyor local up`")
        info.activate()
        if args.penguins or not args.reference:
            print(f"penguins: {seed.seed_penguins()} rows -> {seed.DEMO_TABLE}, {seed.DEMO_CSV}")
        for rows in args.reference:
            print(f"reference workload: {rows} rows -> {seed.seed_reference(rows)}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from conveyor import compile as compiler

    root = Path(args.root)
    if args.check:
        stale = compiler.stale(root)
        if stale:
            print("stale compiled specs (run `make compile`): " + ", ".join(stale))
            return 1
        print("compiled specs are up to date")
        return 0
    for path in compiler.compile_all(root, args.registry, args.names or None):
        print(path)
    return 0


def _images(args: argparse.Namespace) -> int:
    from conveyor import images

    for variant, uri in images.image_map(args.registry).items():
        print(f"{variant} {uri}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from conveyor import submit

    params = submit.parse_params(args.param)
    submit.check_params(args.pipeline, params)
    if args.vertex:
        if not (args.project and args.location and args.pipeline_root):
            raise InputError("--vertex needs --project, --location and --pipeline-root")
        credentials = None
        if args.dry_run:  # nothing is sent: no need for Application Default Credentials
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        job = submit.vertex_job(args.pipeline, project=args.project, location=args.location,
                                pipeline_root=args.pipeline_root, arguments=params,
                                registry=args.registry, credentials=credentials)
        if args.command == "schedule":
            submit.check_vertex_cron(args.cron)
        if args.dry_run:
            print(type(job._gca_resource).to_json(job._gca_resource))
            return 0
        if args.command == "schedule":
            print(submit.schedule_vertex(job, cron=args.cron, name=args.name or
                                         submit.display_name(args.pipeline),
                                         max_concurrency=args.max_concurrency))
        else:
            print(submit.submit_vertex(job, args.service_account))
        return 0
    if not args.host:
        raise InputError("give --host (a Kubeflow Pipelines endpoint) or --vertex")
    if args.command == "schedule":
        print(submit.schedule_kfp(args.pipeline, args.host, params, cron=args.cron,
                                  experiment=args.experiment, name=args.name,
                                  max_concurrency=args.max_concurrency, registry=args.registry))
    else:
        print(submit.submit_kfp(args.pipeline, args.host, params, experiment=args.experiment,
                                run_name=args.name, registry=args.registry))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from conveyor.serving.server import serve

    for option, value in (("--max-request-bytes", args.max_request_bytes),
                          ("--max-instances", args.max_instances)):
        if value < 1:
            raise InputError(f"serve: {option} must be at least 1, got {value}")
    serve(args.model_base_path, args.model_name, args.host, args.port, args.poll_seconds,
          args.max_request_bytes, args.max_instances)
    return 0


def _run(args: argparse.Namespace) -> int:
    if not args.local:
        raise InputError("run takes --local (the embedded stack); use `conveyor submit` for "
                         "Kubeflow Pipelines or Vertex AI")
    from conveyor import demo

    return demo.main(args.root, args.pipeline_root, args.keep_stack)


def _demo(args: argparse.Namespace) -> int:
    from conveyor import demo

    return demo.main(args.root, args.pipeline_root, args.keep_stack)


def parser() -> argparse.ArgumentParser:
    from conveyor.images import DEFAULT_REGISTRY
    from conveyor.serving import MAX_BODY_BYTES, MAX_INSTANCES

    p = argparse.ArgumentParser(prog="conveyor", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"conveyor {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="the local emulator stack")
    local.add_argument("action", choices=["up", "down", "status", "env", "seed"])
    local.add_argument("--root", help="stack folder (default $CONVEYOR_STACK_DIR or the user cache)")
    local.add_argument("--project", default="conveyor-local")
    local.add_argument("--penguins", action="store_true", help="seed: the demo table")
    local.add_argument("--reference", type=int, action="append", default=[], metavar="ROWS",
                       help="seed: the benchmark's reference workload at ROWS rows (repeatable)")
    local.set_defaults(func=_local)

    comp = sub.add_parser("compile", help="regenerate compiled component and pipeline specs")
    comp.add_argument("names", nargs="*", help="only these (e.g. bigquery_ingest, pipeline:training)")
    comp.add_argument("--registry", default=DEFAULT_REGISTRY)
    comp.add_argument("--root", default=".", help="repository root to write under")
    comp.add_argument("--check", action="store_true", help="only report stale specs")
    comp.set_defaults(func=_compile)

    img = sub.add_parser("images", help="image URIs of this version")
    img.add_argument("--registry", default=DEFAULT_REGISTRY)
    img.set_defaults(func=_images)

    for verb, text in (("submit", "run a reference pipeline on Kubeflow Pipelines or Vertex AI"),
                       ("schedule", "a recurring run: one at a time, no catch-up")):
        cmd = sub.add_parser(verb, help=text)
        cmd.add_argument("pipeline", help="training, continuous_training or batch_prediction")
        cmd.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="a pipeline parameter (JSON values parsed), repeatable")
        cmd.add_argument("--host", help="Kubeflow Pipelines endpoint, e.g. http://localhost:8080")
        cmd.add_argument("--experiment", default="conveyor")
        cmd.add_argument("--name", help="run or schedule name")
        cmd.add_argument("--vertex", action="store_true", help="Vertex AI Pipelines instead")
        cmd.add_argument("--project")
        cmd.add_argument("--location")
        cmd.add_argument("--pipeline-root", help="gs:// root for Vertex AI runs")
        cmd.add_argument("--service-account")
        cmd.add_argument("--registry", default=DEFAULT_REGISTRY)
        cmd.add_argument("--dry-run", action="store_true",
                         help="Vertex: print the PipelineJob request instead of sending it")
        if verb == "schedule":
            cmd.add_argument("--cron", required=True,
                             help="KFP: 6 fields, seconds first, UTC; Vertex: 5 fields, TZ=... ok")
            cmd.add_argument("--max-concurrency", type=int, default=1)
        cmd.set_defaults(func=_submit)

    srv = sub.add_parser("serve", help="serve a model base path with the TF Serving REST API")
    srv.add_argument("--model-base-path", required=True, help="local folder or gs:// prefix")
    srv.add_argument("--model-name", required=True)
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default loopback only; 0.0.0.0 opens it to all)")
    srv.add_argument("--port", type=int, default=8501)
    srv.add_argument("--poll-seconds", type=float, default=2.0)
    srv.add_argument("--max-request-bytes", type=int, default=MAX_BODY_BYTES,
                     help=f"larger request bodies get 413 (default {MAX_BODY_BYTES})")
    srv.add_argument("--max-instances", type=int, default=MAX_INSTANCES,
                     help=f"more rows in one request get 413 (default {MAX_INSTANCES})")
    srv.set_defaults(func=_serve)

    run = sub.add_parser("run", help="run the training pipeline locally, start to prediction")
    run.add_argument("--local", action="store_true", help="on the embedded emulator stack")
    run.add_argument("--root", help="stack folder (default as for `local`)")
    run.add_argument("--pipeline-root", default="local_outputs")
    run.add_argument("--keep-stack", action="store_true")
    run.set_defaults(func=_run)

    demo = sub.add_parser("demo", help="the embedded default, end to end (= run --local)")
    demo.add_argument("--root", help="stack folder (default as for `local`)")
    demo.add_argument("--pipeline-root", default="local_outputs")
    demo.add_argument("--keep-stack", action="store_true")
    demo.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConveyorError as exc:
        if args.debug:
            raise
        print(f"conveyor: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    except Exception as exc:  # noqa: BLE001  (cloud clients' errors: one line, not a traceback)
        if args.debug or not type(exc).__module__.startswith(("google.", "kfp", "urllib3")):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"conveyor: error: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
