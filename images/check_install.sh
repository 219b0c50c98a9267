#!/usr/bin/env bash
# Run the CPU Dockerfile's install step as a plain pip install in a clean virtualenv (no Docker
# engine is needed): the files its COPY lines name, then its `RUN ... pip install ...` lines
# verbatim, then import what a component and `conveyor serve` import.
# Usage: images/check_install.sh [Dockerfile]
set -euo pipefail
cd "$(dirname "$0")/.."
dockerfile=${1:-images/conveyor/Dockerfile}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The build context as the Dockerfile sees it: every source of every COPY line.
grep -E '^COPY ' "$dockerfile" | while read -r _ args; do
  set -- $args
  while [ $# -gt 1 ]; do cp -r "$1" "$work/"; shift; done
done
# Every RUN line that runs `pip install`, in order, as the Dockerfile runs it (after its secret
# mount and certificate set-up; its own pip check included), with ${EXTRA} at the Dockerfile's
# default (the CPU variant).
extra=$(sed -n 's/^ARG EXTRA=\(.*\)$/\1/p' "$dockerfile" | head -n 1)
grep -E '^RUN .*pip install ' "$dockerfile" | sed 's/^RUN .*; fi; //' | sed "s/\${EXTRA}/$extra/g" \
  > "$work/steps"
[ -s "$work/steps" ] || { echo "no 'RUN ... pip install' line in $dockerfile" >&2; exit 1; }

python3 -m venv "$work/venv"
start=$(date +%s)
while read -r step; do
  echo "+ (in a clean venv) $step"
  (cd "$work" && PATH="$work/venv/bin:$PATH" /bin/sh -c "$step")  # as RUN's shell form runs it
done < "$work/steps"
echo "installed in $(( $(date +%s) - start )) s"
"$work/venv/bin/python" - <<'PY'
import importlib, sys
for name in ("conveyor", "conveyor.ingest.tasks", "conveyor.ingest.bigquery", "conveyor.ingest.gcs",
             "kfp", "tensorflow", "great_expectations", "google.cloud.bigquery",
             "google.cloud.bigquery_storage", "google.cloud.storage", "pandas", "pyarrow", "farmhash",
             "conveyor.serving.grpc_service"):
    importlib.import_module(name)
import conveyor
print(f"conveyor {conveyor.__version__}: runtime imports ok on Python {sys.version.split()[0]}")
PY
