#!/usr/bin/env bash
# Run the CPU Dockerfile's install step as a plain pip install in a clean virtualenv (no Docker
# engine is needed): the files its COPY lines name, then its `RUN pip install ...` line verbatim,
# then import what a component imports. Usage: images/check_install.sh [Dockerfile]
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
# The `pip install ...` of the RUN line that has one (after its secret mount and certificate
# set-up), with ${EXTRA} at the Dockerfile's default (the CPU variant).
extra=$(sed -n 's/^ARG EXTRA=\(.*\)$/\1/p' "$dockerfile" | head -n 1)
install=$(grep -E '^RUN .*pip install ' "$dockerfile" | head -n 1 | sed 's/^.*\(pip install \)/\1/' \
  | sed "s/\${EXTRA}/$extra/g")
[ -n "$install" ] || { echo "no 'RUN ... pip install' line in $dockerfile" >&2; exit 1; }

python3 -m venv "$work/venv"
echo "+ (in a clean venv) $install"
start=$(date +%s)
(cd "$work" && PATH="$work/venv/bin:$PATH" eval "$install" -q)
echo "installed in $(( $(date +%s) - start )) s"
"$work/venv/bin/pip" check
"$work/venv/bin/python" - <<'PY'
import importlib, sys
for name in ("conveyor", "conveyor.ingest.tasks", "conveyor.ingest.bigquery", "conveyor.ingest.gcs",
             "kfp", "tensorflow", "great_expectations", "google.cloud.bigquery",
             "google.cloud.bigquery_storage", "google.cloud.storage", "pandas", "pyarrow", "farmhash"):
    importlib.import_module(name)
import conveyor
print(f"conveyor {conveyor.__version__}: runtime imports ok on Python {sys.version.split()[0]}")
PY
