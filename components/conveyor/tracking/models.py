"""The model base path mirrored to MLflow's model registry: each conveyor version a model version
(source: the version's URI; tag `conveyor.version`), each label (champion, challenger) an alias.

The registered model is named after the base path's last segment (gs://b/models/penguins ->
`penguins`), as Vertex AI's Model Registry model is by default. MLflow numbers its versions
itself, so a conveyor version and its MLflow version may differ: the tag says which is which.
The labels last mirrored are kept in the registered model's tag `conveyor.labels`, so an alias
conveyor set is removed when its label goes (a promoted or rolled-back challenger) and aliases
set by hand are left alone. An MLflow tracking server refuses a local path as a version's
source (it accepts gs://, s3://, ...): for a local base path the mirror is one warning line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from conveyor.tracking.runs import client, configured_uri, safely

VERSION_TAG = "conveyor.version"
LABELS_TAG = "conveyor.labels"


def model_name(model_base_path: str) -> str:
    """The registered model's name for a base path: its last segment."""
    return model_base_path.rstrip("/").rsplit("/", 1)[-1]


def mirror_versions(model_base_path: str, sources: Mapping[int, str], labels: Mapping[str, int],
                    *, tracking_uri: str = "", run_id: str | None = None
                    ) -> dict[str, str] | None:
    """Register each conveyor version of `sources` ({version: URI}) not registered yet (linked
    to `run_id` when given), then point an alias per label of `labels` ({label: version}) at it.
    Returns {alias: MLflow version}; None when tracking is off or failed (one warning line)."""
    uri = configured_uri(tracking_uri)
    if not uri:
        return None
    name = model_name(model_base_path)
    return safely(uri, f"mirroring {model_base_path} to registered model {name!r}",
                  lambda: _mirror(client(uri), name, sources, labels, run_id))


def _mirror(mlflow, name: str, sources: Mapping[int, str], labels: Mapping[str, int],
            run_id: str | None) -> dict[str, str]:
    model = _registered_model(mlflow, name)
    known = {int(v.tags[VERSION_TAG]): v.version
             for v in mlflow.search_model_versions(f"name = '{name}'")
             if v.tags.get(VERSION_TAG, "").isdigit()}
    for version, source in sorted(sources.items()):
        if version not in known:
            created = mlflow.create_model_version(
                name, source, run_id=run_id, tags={VERSION_TAG: str(version)},
                await_creation_for=0)
            known[version] = created.version
    aliases = {}
    for label, version in sorted(labels.items()):
        if version in known:
            mlflow.set_registered_model_alias(name, label, known[version])
            aliases[label] = known[version]
    before = json.loads(model.tags.get(LABELS_TAG) or "{}")
    for label in sorted(set(before) - set(aliases)):
        if label in model.aliases:
            mlflow.delete_registered_model_alias(name, label)
    mlflow.set_registered_model_tag(name, LABELS_TAG, json.dumps(aliases, sort_keys=True))
    return aliases


def _registered_model(mlflow, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        mlflow.create_registered_model(name)
    except MlflowException as exc:  # created meanwhile by another run
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return mlflow.get_registered_model(name)
