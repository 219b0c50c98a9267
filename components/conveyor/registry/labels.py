"""Version labels: `labels.json` at a model base path, {label: published version}, e.g.
{"champion": 1, "challenger": 2}. `champion` is the version readers serve by default."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conveyor.errors import InputError, one_line
from conveyor.registry.store import Store
from conveyor.registry.versions import INT64_MAX, PublishError

LABELS = "labels.json"  # version labels at the base path: {"champion": 1, "challenger": 2}
LABEL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")


class LabelsError(InputError):
    """The labels file at a base path is not {label: published version}."""


def check_labels(labels, where: str) -> dict[str, int]:
    """`labels` as {label: version}, or LabelsError naming `where` and what is wrong."""
    if not isinstance(labels, dict):
        raise LabelsError(f"{where}: expected a JSON object {{label: version}}, got "
                          f"{type(labels).__name__}")
    out = {}
    for label, version in labels.items():
        if not isinstance(label, str) or not LABEL_NAME.fullmatch(label):
            raise LabelsError(f"{where}: label {label!r} is not a label name (lowercase letter, "
                              "then up to 62 lowercase letters, digits, '_' or '-')")
        if (isinstance(version, bool) or not isinstance(version, int) or version < 1
                or version > INT64_MAX):
            raise LabelsError(f"{where}: label {label!r} names {version!r}; expected a version "
                              f"number (an integer from 1 to {INT64_MAX})")
        out[label] = version
    return out


class Labelled(Store):
    """ModelBasePath's labels: read, check, and update them atomically (local or gs://)."""

    def labels_uri(self) -> str:
        return f"{self.uri}/{LABELS}"

    def labels(self) -> dict[str, int]:
        """The version labels (`labels.json` at the base path), {} when there is no such file.
        A file that is not {label: version} raises LabelsError naming it."""
        return self._read_labels()[0]

    def served(self) -> int | None:
        """The version readers serve by default: the `champion` label when the base path has
        labels, else the newest published version (TensorFlow Serving's own choice)."""
        labels = self.labels()
        return labels["champion"] if "champion" in labels else self.latest()

    def update_labels(self, change) -> dict[str, int]:
        """Apply `change(labels) -> labels` atomically (read, change and write as one step
        against concurrent updates: a lock locally, a generation precondition on Cloud
        Storage, retried) and return the labels written. Every labelled version must be a
        published one (LabelsError naming it otherwise; nothing written). An empty result
        removes the file, so readers serve the newest version again."""
        from conveyor.gcp import retry

        for _ in range(20):
            current, generation = self._read_labels()
            new = check_labels(change(dict(current)), f"labels of {self.uri}")
            if new:
                published = set(self.versions())
                for label, version in sorted(new.items()):
                    if version not in published:
                        raise LabelsError(f"labels of {self.uri}: {label!r} -> version "
                                          f"{version}, which is not a published version "
                                          f"(published: {sorted(published) or 'none'})")
            if new == current:
                return new
            if not self.gcs:
                base = Path(self.uri)
                base.mkdir(parents=True, exist_ok=True)
                with self._locked(base):
                    if self._read_labels()[0] != current:
                        continue  # changed meanwhile: read again
                    self._write_local_labels(base, new)
                return new
            from google.api_core.exceptions import NotFound, PreconditionFailed

            blob = self._bucket().blob(self._key(LABELS))
            try:
                with retry.giving_up(f"labels: write {self.labels_uri()}"):
                    if new:
                        blob.upload_from_string(json.dumps(new, sort_keys=True).encode(),
                                                content_type="application/json",
                                                if_generation_match=generation or 0)
                    elif generation:
                        blob.delete(if_generation_match=generation)
                return new
            except (PreconditionFailed, NotFound):
                continue  # another writer was first: read again
        raise PublishError(f"labels of {self.uri}: changed by other writers 20 times in a row "
                           "while this one tried to update them; nothing written")

    def _read_labels(self) -> tuple[dict[str, int], int | None]:
        """(labels, the gs:// object's generation or None)."""
        where = self.labels_uri()
        if not self.gcs:
            try:
                raw = (Path(self.uri) / LABELS).read_bytes()
            except FileNotFoundError:
                return {}, None
            except OSError as exc:
                raise LabelsError(f"{where}: cannot read it: {one_line(exc)}") from None
            generation = None
        else:
            from conveyor.gcp import retry

            with self._bucket_errors():
                blob = self._bucket().get_blob(self._key(LABELS), retry=retry.storage())
                if blob is None:
                    return {}, None
                raw = blob.download_as_bytes(retry=retry.storage())
                generation = blob.generation
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LabelsError(f"{where}: not JSON ({exc})") from None
        return check_labels(data, where), generation

