#!/usr/bin/env bash
# Build conveyor's images with docker buildx, tagged from the one version string
# (components/conveyor/version.py; conveyor.images names the same tags in compiled specs), each
# variant from the base image conveyor.images.BASE_IMAGES pins by digest. Refuses, before building
# anything, when a base is not pinned (images/pin.sh pins them).
# Usage: images/build.sh REGISTRY [--push]      (make images REGISTRY=... [PUSH=1])
set -euo pipefail
cd "$(dirname "$0")/.."
registry=${1:?usage: images/build.sh REGISTRY [--push]}
registry=${registry%/}
output=--load
if [ "${2:-}" = "--push" ]; then output=--push; fi
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' components/conveyor/version.py)
[ -n "$version" ] || { echo "no __version__ in components/conveyor/version.py" >&2; exit 1; }

# "variant suffix base extra" lines; conveyor.images exits non-zero, naming them, on unpinned bases.
plan=$(PYTHONPATH=components python3 -m conveyor.images)
while read -r variant suffix base extra; do
  [ "$suffix" = "-" ] && suffix=""
  echo "+ conveyor:$version$suffix ($variant) from $base"
  docker buildx build -f images/conveyor/Dockerfile --build-arg "BASE_IMAGE=$base" \
    --build-arg "EXTRA=$extra" \
    -t "$registry/conveyor:$version$suffix" "$output" . </dev/null
done <<< "$plan"
