#!/usr/bin/env bash
# Build conveyor's image on a machine that reaches only Debian's packages and PyPI (no Docker
# Hub, no registry): `make image`. It
#   1. installs Debian's docker.io, debootstrap and docker-registry when missing (as root),
#   2. starts a Docker engine when none answers (`dockerd --bridge=none --iptables=false`:
#      containers run on --network host, so they reach the local emulators on 127.0.0.1),
#   3. starts a registry on 127.0.0.1:$CONVEYOR_REGISTRY_PORT (default 5000) when none answers:
#      it only gives the base image a digest, which the Dockerfile requires,
#   4. builds the base once (kept: skipped while the image exists): Debian 12 from
#      `debootstrap --variant=minbase`, python3 3.11 with a virtualenv on PATH, so that `python`
#      and `pip install` behave as in python:3.11-slim-bookworm (the base on GCP),
#   5. builds conveyor's image from images/conveyor/Dockerfile FROM that base, pinned by the
#      digest the registry gave it, tagged conveyor:<version> (the tag conveyor.images names), with
#      the CA bundle $PIP_CERT (else the system's) handed to pip as a BuildKit secret: in no layer.
# Usage: images/local.sh [cpu|gpu]     Prints the image's name on its last line.
# Environment: CONVEYOR_BASE_IMAGE (a base pinned as name:tag@sha256:..., e.g. the digest-pinned
# python:3.11-slim-bookworm where Docker Hub is reachable: steps 3 and 4 are skipped),
# CONVEYOR_IMAGE_REPO (default "conveyor"; the image is REPO:<version>[-gpu]),
# CONVEYOR_REGISTRY_PORT, DEBIAN_MIRROR (default: the mirror apt uses), CONVEYOR_DOCKER_STATE
# (default /var/lib/conveyor-docker: the engine's and the registry's logs and data).
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-cpu}
repo=${CONVEYOR_IMAGE_REPO:-conveyor}
port=${CONVEYOR_REGISTRY_PORT:-5000}
state=${CONVEYOR_DOCKER_STATE:-/var/lib/conveyor-docker}
base=conveyor-base:bookworm-py3.11
docker=/usr/bin/docker  # Debian's CLI: the engine's own version, with BuildKit (see FACTS)
as_root=""
[ "$(id -u)" = 0 ] || as_root="sudo"
say() { echo "+ $*" >&2; }

# 1. packages
missing=()
command -v dockerd >/dev/null 2>&1 && [ -x "$docker" ] || missing+=(docker.io)
if [ -z "${CONVEYOR_BASE_IMAGE:-}" ]; then
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
$as_root mkdir -p "$state"

# 2. the engine
if ! $docker info >/dev/null 2>&1; then
  say "starting dockerd (log: $state/dockerd.log)"
  $as_root sh -c "nohup dockerd --bridge=none --iptables=false >'$state/dockerd.log' 2>&1 &"
  for _ in $(seq 60); do $docker info >/dev/null 2>&1 && break; sleep 1; done
  $docker info >/dev/null 2>&1 || { tail -n 20 "$state/dockerd.log" >&2; exit 1; }
fi

if [ -n "${CONVEYOR_BASE_IMAGE:-}" ]; then
  base_ref=$CONVEYOR_BASE_IMAGE
else
# 3. the registry that gives the base its digest
if ! curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then
  say "starting docker-registry on 127.0.0.1:$port (data: $state/registry)"
  $as_root mkdir -p "$state/registry"
  $as_root tee "$state/registry.yml" >/dev/null <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $state/registry
http:
  addr: 127.0.0.1:$port
EOF
  $as_root sh -c "nohup docker-registry serve '$state/registry.yml' >'$state/registry.log' 2>&1 &"
  for _ in $(seq 30); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 1; done
  curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null || { tail -n 20 "$state/registry.log" >&2; exit 1; }
fi

# 4. the base, once
if ! $docker image inspect "$base" >/dev/null 2>&1; then
  mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources \
    2>/dev/null | grep -v security | head -n 1)}
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d)
  trap '$as_root rm -rf "$rootfs"' EXIT
  say "debootstrap --variant=minbase bookworm from $mirror (about 2 minutes)"
  $as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >&2
  # The layout of python:3.11-slim: a `python` on PATH that pip installs into, as root. Debian's
  # own python3 refuses pip installs (PEP 668), so a virtualenv stands in front of it.
  $as_root chroot "$rootfs" python3 -m venv /opt/python
  $as_root chroot "$rootfs" sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*'
  say "docker import $base"
  $as_root tar -C "$rootfs" -c . | $docker import \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$base" >&2
  $as_root rm -rf "$rootfs"
  trap - EXIT
fi
pinned_ref=127.0.0.1:$port/$base
$docker tag "$base" "$pinned_ref"
digest=$($docker push "$pinned_ref" | sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p')
[ -n "$digest" ] || { echo "no digest from docker push $pinned_ref" >&2; exit 1; }
base_ref=$pinned_ref@$digest
fi

# 5. conveyor's image
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' components/conveyor/version.py)
read -r suffix extra < <(PYTHONPATH=components python3 -c "from conveyor import images
print(images.VARIANTS['$variant'] or '-', images.EXTRAS['$variant'])")
[ "$suffix" = "-" ] && suffix=""
image=$repo:$version$suffix
# The CA bundle this machine's pip trusts: $PIP_CERT, else the system's (a proxy's CA may be in it).
cert=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
secret=()
if [ -f "$cert" ]; then secret=(--secret "id=pipcert,src=$cert"); fi
say "building $image FROM $base_ref"
start=$(date +%s)
DOCKER_BUILDKIT=1 $docker build --network host -f images/conveyor/Dockerfile \
  --build-arg "BASE_IMAGE=$base_ref" --build-arg "EXTRA=$extra" \
  "${secret[@]}" -t "$image" . </dev/null >&2
say "built $image in $(( $(date +%s) - start )) s, $($docker image inspect -f '{{.Size}}' "$image") bytes"
echo "$image"
