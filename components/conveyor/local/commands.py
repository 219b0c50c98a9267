"""`conveyor local load|query|fetch|bucket`: files into the local stack, rows and objects out.

Each runs against the stack under `--root` if given, else the one the environment names (`eval
"$(conveyor local env)"`; checked to answer, so a stopped one fails in seconds naming the
command that starts it), else the one under the default root. The work is `conveyor.local.data`,
imported by each command (the parser is built for every `conveyor` command).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from conveyor.errors import InputError


def use_stack(args: argparse.Namespace) -> None:
    """Point this process's clients at a running stack: the one under `--root` if given, else
    the one the environment already names (`eval "$(conveyor local env)"`; checked to answer,
    so a stopped one fails in seconds), else the one under the default root."""
    from conveyor.local import LocalStack
    from conveyor.local.stack import check_environment, environment_names_stack, not_running

    if not args.root and environment_names_stack():
        check_environment()
        return
    stack = LocalStack(args.root)
    info = stack.status()
    if info is None:
        raise not_running(stack.root, args.root)
    info.activate()


def _load(args: argparse.Namespace) -> int:
    from conveyor.local import data  # pyarrow and the clients: only when used

    if bool(args.table) == bool(args.gcs):
        raise InputError("load: give exactly one of --table dataset.table or --gcs gs://...")
    use_stack(args)
    if args.table:
        rows = data.load_table(args.file, args.table, replace=args.replace)
        print(f"{rows} rows -> {args.table}")
    else:
        print(data.upload(args.file, args.gcs, replace=args.replace))
    return 0


def _query(args: argparse.Namespace) -> int:
    from conveyor.local import data  # pyarrow and the clients: only when used

    if args.max_rows < 0:
        raise InputError(f"query: --max-rows must be 0 or more, got {args.max_rows}")
    if args.out:
        data.file_format(Path(args.out), "--out")
        use_stack(args)
        rows = data.query_to_file(args.sql, args.out, replace=args.replace)
        print(f"{rows} rows -> {args.out}")
        return 0
    use_stack(args)
    result = data.query(args.sql, max_rows=args.max_rows)
    print(format_rows(result.columns, result.rows))
    if result.total_rows > len(result.rows):
        print(f"({len(result.rows)} of {result.total_rows} rows shown; --max-rows N shows more, "
              "--out FILE.csv|.parquet writes them all)")
    else:
        print(f"({result.total_rows} row{'s' if result.total_rows != 1 else ''})")
    return 0


def format_rows(columns: list[str], rows: list[tuple]) -> str:
    """An aligned text table; NULL for missing values."""
    def show(value) -> str:
        return "NULL" if value is None else str(value).replace("\n", "\\n")

    cells = [columns] + [[show(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _bucket(args: argparse.Namespace) -> int:
    from conveyor.local import data  # pyarrow and the clients: only when used

    names = [data.parse_gs_uri(uri if uri.startswith("gs://") else f"gs://{uri}", "BUCKET")[0]
             for uri in args.buckets]
    use_stack(args)
    created = set(data.ensure_buckets(names))
    for name in dict.fromkeys(names):
        print(f"gs://{name} " + ("created" if name in created else "exists"))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from conveyor.local import data  # pyarrow and the clients: only when used

    data.parse_gs_uri(args.uri, "URI")
    use_stack(args)
    files = data.fetch(args.uri, args.dir)
    print(f"{len(files)} file{'s' if len(files) != 1 else ''} -> {args.dir}")
    return 0


def add_data_commands(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`conveyor local load|query|fetch`: files into the stack, rows and objects out of it."""
    stack_help = ("stack folder; without it, the stack the environment points at "
                  "(conveyor local env), else the default one")
    load = actions.add_parser("load", help="a CSV or Parquet file into a table or gs://")
    load.add_argument("file", metavar="FILE", help="a .csv or .parquet file")
    load.add_argument("--table", help="dataset.table: created with the file's columns")
    load.add_argument("--gcs", help="gs://bucket/path (or gs://bucket/folder/): the file copied")
    load.add_argument("--replace", action="store_true", help="replace an existing table/object")
    load.set_defaults(func=_load)
    query = actions.add_parser("query", help="run SQL; print rows or write them to a file")
    query.add_argument("sql", metavar="SQL")
    query.add_argument("--max-rows", type=int, default=20, help="rows to print (default 20)")
    query.add_argument("--out", help="write every row to FILE.csv or FILE.parquet instead")
    query.add_argument("--replace", action="store_true", help="replace an existing --out file")
    query.set_defaults(func=_query)
    fetch = actions.add_parser("fetch", help="copy a gs:// object or prefix to a local folder")
    fetch.add_argument("uri", metavar="URI", help="gs://bucket/prefix, e.g. a model version")
    fetch.add_argument("dir", metavar="DIR", help="a new (or empty) local folder")
    fetch.set_defaults(func=_fetch)
    bucket = actions.add_parser("bucket", help="create buckets (conveyor run --local creates "
                                               "the ones its gs:// parameters name)")
    bucket.add_argument("buckets", nargs="+", metavar="gs://BUCKET")
    bucket.set_defaults(func=_bucket)
    for cmd in (load, query, fetch, bucket):
        cmd.add_argument("--root", default=argparse.SUPPRESS, help=stack_help)
