#!/usr/bin/env bash
# Pin each base image of conveyor.images.BASE_IMAGES to the digest its tag points at now, and
# write the result back into components/conveyor/images.py (review the diff, then commit it).
# Needs `docker buildx imagetools inspect` and a reachable registry (no Docker engine needed);
# re-run it to move to a newer base (security updates of python:3.11-slim-bookworm, say).
# Usage: images/pin.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=components python3 - <<'PY'
import json
import subprocess
from pathlib import Path

from conveyor import images

source = Path("components/conveyor/images.py")
text = source.read_text()
for ref in sorted(set(images.BASE_IMAGES.values())):  # the variants may share a base
    tagged = ref.split("@", 1)[0]
    out = subprocess.run(["docker", "buildx", "imagetools", "inspect", tagged,
                          "--format", "{{json .Manifest}}"],
                         capture_output=True, text=True, check=True).stdout
    pinned = f"{tagged}@{json.loads(out)['digest']}"
    if not images.PINNED.match(pinned):
        raise SystemExit(f"{tagged} resolved to {pinned!r}, not name:tag@sha256:<digest>")
    if text.count(f'"{ref}"') != 1:
        raise SystemExit(f"expected {ref!r} exactly once in {source}")
    text = text.replace(f'"{ref}"', f'"{pinned}"')
    print(pinned)
source.write_text(text)
PY
