"""The `conveyor` command line.

    conveyor local up|down|status|env|seed   the embedded emulator stack and its data
    conveyor local load|query|fetch          data in and out of it (CSV, Parquet, gs://)
    conveyor compile [NAME ...]              regenerate compiled component and pipeline specs
    conveyor images                          the image URIs of this version
    conveyor submit|schedule PIPELINE        on Kubeflow Pipelines (--host) or Vertex AI (--vertex)
    conveyor serve --model-base-path P --model-name N   TF Serving's REST API on loopback
    conveyor run PIPELINE --local [--docker] [--param NAME=VALUE ...]
                                             any pipeline through kfp.local
                                             (--docker: every task in conveyor's image)
    conveyor demo                            the penguins preset of it, then a prediction

Errors are one line on stderr (exit 2 for bad input, 1 otherwise); `--debug` shows tracebacks.
Output into a pipe that closes early (`| head`) ends the command quietly, with the status a
shell gives a program stopped by SIGPIPE (141).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from conveyor.errors import ConveyorError, InputError
from conveyor.version import __version__


def _local(args: argparse.Namespace) -> int:
    from conveyor.local import LocalStack, StackInfo, seed
    from conveyor.local.stack import env_command, not_running

    stack = LocalStack(args.root, project=args.project)
    info: StackInfo | None  # up() returns one; status() None when nothing runs
    if args.action == "up":
        info = stack.up()
        print(f"BigQuery   {info.bigquery_endpoint} "
              f"(Storage Read gRPC {info.bigquery_storage_endpoint})")
        print(f"GCS        {info.gcs_endpoint}")
        print(f"data       {info.root}")
        print(f"point a shell at it with:  {env_command(args.root)}")
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
            raise not_running(stack.root, args.root)
        for key, value in info.environ().items():
            print(f"export {key}={value}")
    elif args.action == "seed":
        info = stack.status()
        if info is None:
            raise not_running(stack.root, args.root)
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
    own = [n for n in args.names if compiler.is_own(n)]
    if args.output and len(own) != 1:
        raise InputError("compile: --output takes exactly one pipeline of your own "
                         "(path/to/module.py:function, package.module:function or a .yaml)")
    for name in own:
        print(compiler.compile_own(name, Path(args.output) if args.output else None,
                                   args.registry))
    if own and len(own) == len(args.names):
        return 0
    for path in compiler.compile_all(root, args.registry,
                                     [n for n in args.names if n not in own] or None):
        print(path)
    return 0


def _images(args: argparse.Namespace) -> int:
    from conveyor import images

    for variant, uri in images.image_map(args.registry).items():
        print(f"{variant} {uri}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from conveyor import submit
    from conveyor.pipelines.resolve import parse_cli_params, resolve

    if args.vertex and not (args.project and args.location and args.pipeline_root):
        raise InputError("--vertex needs --project, --location and --pipeline-root")
    if not args.vertex and not args.host:
        raise InputError("give --host (a Kubeflow Pipelines endpoint) or --vertex")
    component, _ = resolve(args.pipeline)
    params = submit.check_params(args.pipeline, parse_cli_params(args.param, component))
    if args.vertex:
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
    if args.dry_run:
        import json

        cron = args.cron if args.command == "schedule" else None
        print(json.dumps(submit.kfp_request(
            args.pipeline, args.host, params, experiment=args.experiment, name=args.name,
            registry=args.registry, cron=cron,
            max_concurrency=getattr(args, "max_concurrency", 1)), indent=1))
        return 0
    if args.command == "schedule":
        print(submit.schedule_kfp(args.pipeline, args.host, params, cron=args.cron,
                                  experiment=args.experiment, name=args.name,
                                  max_concurrency=args.max_concurrency, registry=args.registry))
    else:
        print(submit.submit_kfp(args.pipeline, args.host, params, experiment=args.experiment,
                                run_name=args.name, registry=args.registry))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from conveyor.serving import check_model_name
    from conveyor.serving.listener import limits_of
    from conveyor.serving.server import serve

    check_model_name(args.model_name)  # before anything loads: no URL could reach it

    for option, value in (("--max-request-bytes", args.max_request_bytes),
                          ("--max-instances", args.max_instances)):
        if value < 1:
            raise InputError(f"serve: {option} must be at least 1, got {value}")
    if not 0 <= args.grpc_port <= 65535 or (args.grpc_port and args.grpc_port == args.port):
        raise InputError(f"serve: --grpc-port must be 0 (no gRPC) or a TCP port other than "
                         f"--port ({args.port}), got {args.grpc_port}")
    if not 0 <= args.canary_percent <= 100:
        raise InputError(f"serve: --canary-percent must be 0 to 100, got {args.canary_percent}")
    serve(args.model_base_path, args.model_name, args.host, args.port, args.poll_seconds,
          args.max_request_bytes, args.max_instances, _prediction_log(args),
          args.monitoring_uri or os.environ.get("CONVEYOR_MONITORING_URI", ""),
          canary_percent=args.canary_percent, limits=limits_of(args), grpc_port=args.grpc_port)
    return 0


def _prediction_log(args: argparse.Namespace):
    """serve's PredictionLog from its --log-* options, each defaulting to its
    CONVEYOR_PREDICTION_LOG* variable; None when no prefix is given."""
    from conveyor.serving.prediction_log import PredictionLog, from_environment

    settings = from_environment()
    for key in ("prefix", "sample_rate", "flush_rows", "flush_seconds", "queue_rows",
                "queue_bytes", "bigquery_table"):
        value = getattr(args, f"log_{key}")
        if value is not None:
            settings[key] = value
    if not settings.get("prefix"):
        if any(key != "prefix" for key in settings):
            raise InputError("serve: --log-* options need --log-predictions PREFIX "
                             "(or CONVEYOR_PREDICTION_LOG)")
        return None
    return PredictionLog(settings.pop("prefix"), **settings)


def _run(args: argparse.Namespace) -> int:
    if not args.local:
        raise InputError("run takes --local (the embedded stack); use `conveyor submit` for "
                         "Kubeflow Pipelines or Vertex AI")
    from conveyor.pipelines import PIPELINES

    if not args.pipeline:
        raise InputError("run: give a PIPELINE: " + ", ".join(sorted(PIPELINES))
                         + ", path/to/module.py:function, package.module:function or a compiled "
                         "pipeline .yaml (the penguins demo is `conveyor demo`)")
    from conveyor.local.run import run_component
    from conveyor.pipelines.resolve import check_arguments, parse_cli_params, resolve

    component, label = resolve(args.pipeline)
    arguments = check_arguments(component, parse_cli_params(args.param, component), label)
    image = None
    if args.docker or args.image:
        from conveyor.images import local_image

        image = args.image or local_image()
    result = run_component(component, label, arguments, pipeline_root=args.pipeline_root,
                           stack_root=args.root, keep_stack=args.keep_stack,
                           verbose=args.verbose, raise_on_error=False, image=image)
    if result.ok:
        return 0
    print(f"conveyor: error: {result.error_message()}", file=sys.stderr)
    return 2 if result.input_error else 1


def _demo(args: argparse.Namespace) -> int:
    from conveyor import demo

    return demo.main(args.root, args.pipeline_root, args.keep_stack, verbose=args.verbose)


def _add_local(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`conveyor local ...`: the stack's lifecycle, then data in and out of it."""
    root_help = "stack folder (default $CONVEYOR_STACK_DIR or the user cache)"
    local = sub.add_parser("local", help="the local emulator stack and data in and out of it")
    local.add_argument("--root", help=root_help)
    actions = local.add_subparsers(dest="action", required=True)
    for action, text in (("up", "start the stack (or find the running one)"),
                         ("down", "stop it"), ("status", "is it running (exit 3 if not)"),
                         ("env", "print the exports that point a shell at it"),
                         ("seed", "load the demo and benchmark data")):
        cmd = actions.add_parser(action, help=text)
        cmd.add_argument("--root", default=argparse.SUPPRESS, help=root_help)
        cmd.add_argument("--project", default="conveyor-local")
        if action == "seed":
            cmd.add_argument("--penguins", action="store_true", help="the demo table")
            cmd.add_argument("--reference", type=int, action="append", default=[],
                             metavar="ROWS",
                             help="the benchmark's reference workload at ROWS rows (repeatable)")
        cmd.set_defaults(func=_local)
    from conveyor.local.commands import add_data_commands

    add_data_commands(actions)


def _add_compile_and_images(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`conveyor compile` and `conveyor images`: the specs and image URIs of this version."""
    from conveyor.images import DEFAULT_REGISTRY

    comp = sub.add_parser("compile", help="regenerate compiled component and pipeline specs")
    comp.add_argument("names", nargs="*",
                      help="only these (e.g. bigquery_ingest, pipeline:training); or your own "
                           "pipeline: path/to/module.py:function, package.module:function, or "
                           "a compiled .yaml to retarget with --registry")
    comp.add_argument("--output", "-o", help="your own pipeline's file (default FUNCTION.yaml)")
    comp.add_argument("--registry", default=DEFAULT_REGISTRY)
    comp.add_argument("--root", default=".", help="repository root to write under")
    comp.add_argument("--check", action="store_true", help="only report stale specs")
    comp.set_defaults(func=_compile)

    img = sub.add_parser("images", help="image URIs of this version")
    img.add_argument("--registry", default=DEFAULT_REGISTRY)
    img.set_defaults(func=_images)


def _add_submit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`conveyor submit` and `conveyor schedule`: a pipeline on KFP or Vertex AI."""
    from conveyor.images import DEFAULT_REGISTRY

    for verb, text in (("submit", "run a pipeline on Kubeflow Pipelines or Vertex AI"),
                       ("schedule", "a recurring run: one at a time, no catch-up")):
        cmd = sub.add_parser(verb, help=text)
        cmd.add_argument("pipeline", help="a reference pipeline (training, continuous_training, "
                         "batch_prediction, monitoring, ...), your own "
                         "path/to/module.py:function or package.module:function, or a "
                         "compiled .yaml")
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
                         help="print the request (Vertex: the PipelineJob; Kubeflow Pipelines: "
                              "host, experiment, name, arguments and the compiled package) "
                              "instead of sending it")
        if verb == "schedule":
            cmd.add_argument("--cron", required=True,
                             help="KFP: 6 fields, seconds first, UTC; Vertex: 5 fields, TZ=... ok")
            cmd.add_argument("--max-concurrency", type=int, default=1)
        cmd.set_defaults(func=_submit)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`conveyor serve`: the TF Serving REST and gRPC APIs, their limits, monitoring gauges and
    canary."""
    from conveyor.serving import MAX_BODY_BYTES, MAX_INSTANCES, listener

    srv = sub.add_parser("serve", help="serve a model base path with the TF Serving REST and "
                         "gRPC APIs")
    srv.add_argument("--model-base-path", required=True, help="local folder or gs:// prefix")
    srv.add_argument("--model-name", required=True,
                     help="the name in the URLs: /v1/models/NAME:predict (letters, digits, "
                          "'.', '_', '-'; up to 200)")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default loopback only; 0.0.0.0 opens it to all)")
    srv.add_argument("--port", type=int, default=8501,
                     help="TCP port of the REST API (default 8501, TF Serving's)")
    srv.add_argument("--grpc-port", type=int, default=8500,
                     help="TCP port of TF Serving's gRPC PredictionService (Predict, Classify, "
                          "Regress, GetModelMetadata) on the same --host (default 8500, TF "
                          "Serving's --port); 0: no gRPC")
    srv.add_argument("--poll-seconds", type=float, default=2.0, help="seconds between looks "
                     "for new versions and labels (default 2); 0: load once, never look again")
    srv.add_argument("--max-request-bytes", type=int, default=MAX_BODY_BYTES,
                     help=f"larger request bodies get 413 (default {MAX_BODY_BYTES})")
    srv.add_argument("--max-instances", type=int, default=MAX_INSTANCES,
                     help=f"more rows in one request get 413 (default {MAX_INSTANCES})")
    listener.add_arguments(srv)
    _add_prediction_logging(srv)
    srv.add_argument("--monitoring-uri", metavar="URI",
                     help="export the newest monitoring result found here (a monitoring.json, "
                          "or a folder or gs:// prefix the monitor publishes into) as "
                          "Prometheus gauges: conveyor_feature_drift{feature=...}, "
                          "conveyor_feature_drifted, ... (default CONVEYOR_MONITORING_URI)")
    srv.add_argument("--canary-percent", type=float, default=0.0, metavar="PERCENT",
                     help="with version labels at the base path (labels.json), the share of "
                          "requests without a version or label that the `challenger` answers, "
                          "chosen by request id; the rest go to the `champion` (default 0). "
                          "Either is reachable as /v1/models/NAME/labels/LABEL:predict")
    srv.set_defaults(func=_serve)


def _add_prediction_logging(srv: argparse.ArgumentParser) -> None:
    """`conveyor serve`'s "prediction logging" group: where and how often requests are logged."""
    logs = srv.add_argument_group(
        "prediction logging", "each option defaults to its environment variable "
        "(CONVEYOR_PREDICTION_LOG, CONVEYOR_PREDICTION_LOG_SAMPLE_RATE, ..._FLUSH_ROWS, "
        "..._FLUSH_SECONDS, ..._QUEUE_ROWS, ..._QUEUE_BYTES, ..._BIGQUERY_TABLE)")
    logs.add_argument("--log-predictions", dest="log_prefix", metavar="PREFIX",
                      help="log sampled requests, one row per instance, as Parquet under this "
                           "local folder or gs:// prefix (PREFIX/date=YYYY-MM-DD/part-*.parquet)")
    logs.add_argument("--log-sample-rate", dest="log_sample_rate", type=float,
                      help="share of requests logged, by a hash of the request id (default 1)")
    logs.add_argument("--log-flush-rows", dest="log_flush_rows", type=int,
                      help="write a file once this many rows wait (default 1000)")
    logs.add_argument("--log-flush-seconds", dest="log_flush_seconds", type=float,
                      help="write a file once the oldest row waited this long (default 10)")
    logs.add_argument("--log-queue-rows", dest="log_queue_rows", type=int,
                      help="rows waiting beyond this are dropped and counted (default 100000)")
    logs.add_argument("--log-queue-bytes", dest="log_queue_bytes", type=int,
                      help="request bytes waiting beyond this are dropped and counted "
                           "(default 64 MiB)")
    logs.add_argument("--log-bigquery-table", dest="log_bigquery_table",
                      metavar="DATASET.TABLE",
                      help="also load each file into this BigQuery table (created if missing)")


def _add_run_and_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`conveyor run PIPELINE --local` and `conveyor demo`, which share the stack options."""
    run = sub.add_parser("run", help="run a pipeline locally through kfp.local, quietly",
                         description="Run a reference pipeline, your own @dsl.pipeline or a "
                         "compiled pipeline YAML through kfp.local against the local stack "
                         "(started if none runs): one line per task, every log in a file.")
    run.add_argument("pipeline", nargs="?", metavar="PIPELINE",
                     help="training, continuous_training, batch_prediction, "
                          "path/to/module.py:function, package.module:function or FILE.yaml")
    run.add_argument("--local", action="store_true", help="on the embedded emulator stack")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a pipeline parameter (JSON values parsed), repeatable")
    run.add_argument("--docker", action="store_true",
                     help="run every task in a container of conveyor's image (kfp's "
                          "DockerRunner), as on Vertex AI; `make image` builds it")
    run.add_argument("--image", metavar="IMAGE",
                     help="with --docker, this image instead of conveyor:<version> "
                          "(implies --docker)")
    demo = sub.add_parser("demo", help="the penguins preset of `run training --local`, then a "
                                       "prediction from the served model")
    for cmd in (run, demo):
        cmd.add_argument("--root", help="stack folder; without it, the stack the environment "
                                        "points at (conveyor local env), else the default one; "
                                        "started if not running")
        cmd.add_argument("--pipeline-root", default="local_outputs",
                         help="where run folders go (default ./local_outputs)")
        cmd.add_argument("--verbose", action="store_true",
                         help="stream every task's whole log to the console too")
        cmd.add_argument("--keep-stack", action="store_true",
                         help="leave a stack this command started running")
    run.set_defaults(func=_run)
    demo.set_defaults(func=_demo)
    runs = sub.add_parser("runs", help="list local runs with their key figures, or compare two",
                          description="Without RUN: every run under --pipeline-root, newest "
                          "first. With two: the arguments that differ and each task's figures "
                          "side by side.")
    runs.add_argument("compare", nargs="*", metavar="RUN",
                      help="two run folders (or their names under --pipeline-root) to compare")
    runs.add_argument("--pipeline-root", default="local_outputs",
                      help="where run folders are (default ./local_outputs)")
    runs.set_defaults(func=_runs)


def _runs(args: argparse.Namespace) -> int:
    from conveyor.local import runs

    root = Path(args.pipeline_root)
    if not args.compare:
        print(runs.listing(root))
    elif len(args.compare) == 2:
        print(runs.compare(root, *args.compare))
    else:
        raise InputError("runs: give no run (list them) or two (compare them)")
    return 0


def parser() -> argparse.ArgumentParser:
    """The whole command line: one builder per subcommand (or group of them), in help order."""
    p = argparse.ArgumentParser(prog="conveyor", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"conveyor {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    _add_local(sub)
    _add_compile_and_images(sub)
    _add_submit(sub)
    _add_serve(sub)
    _add_run_and_demo(sub)
    return p


def _closed_pipe() -> int:
    """Output went to a pipe that closed (`conveyor ... | head`): nothing more to say. Further
    writes (Python's own flush at exit included) go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        return _closed_pipe()


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConveyorError as exc:
        if args.debug:
            raise
        print(f"conveyor: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    except Exception as exc:  # cloud clients' errors: one line, not a traceback
        if args.debug or not type(exc).__module__.startswith(("google.", "kfp", "urllib3")):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"conveyor: error: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
