"""File hashes of a folder: what tells two models apart (push's dedupe, the registry's
manifests, evaluate's baseline check)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def digest(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by relative path (sorted)."""
    folder = Path(folder)
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[str(path.relative_to(folder))] = h.hexdigest()
    return out


def manifest_hash(hashes: dict[str, str]) -> str:
    """One SHA-256 for a whole file manifest (`digest`)."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
