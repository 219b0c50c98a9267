#!/usr/bin/env bash
# Build conveyor's images with docker buildx, tagged from the one version string
# (components/conveyor/version.py; conveyor.images names the same tags in compiled specs).
# Usage: images/build.sh REGISTRY [--push]      (make images REGISTRY=... [PUSH=1])
set -euo pipefail
cd "$(dirname "$0")/.."
registry=${1:?usage: images/build.sh REGISTRY [--push]}
registry=${registry%/}
output=--load
if [ "${2:-}" = "--push" ]; then output=--push; fi
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' components/conveyor/version.py)
[ -n "$version" ] || { echo "no __version__ in components/conveyor/version.py" >&2; exit 1; }

docker buildx build -f images/conveyor/Dockerfile -t "$registry/conveyor:$version" "$output" .
docker buildx build -f images/conveyor/Dockerfile --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu \
  -t "$registry/conveyor:$version-gpu" "$output" .
