"""The served version as the monitor sees it: its fitted transform, its training statistics and,
when recorded, its eval-time prediction statistics (all from `assets.extra/`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from conveyor.errors import InputError, SourceNotFoundError
from conveyor.model.layout import ASSETS_EXTRA, PREDICTIONS_FILE, STATISTICS_FILE, TRANSFORM_FILE
from conveyor.model.predictions import PREDICTIONS_FORMAT
from conveyor.stats.columns import DatasetStatistics, SplitStatistics
from conveyor.transform.fit import Fitted


@dataclasses.dataclass
class Served:
    """What the monitor needs of the served version: its transform, training statistics and,
    when recorded, its eval-time prediction statistics."""
    fitted: Fitted
    statistics: DatasetStatistics
    version: int | None = None
    uri: str = ""
    predictions: dict | None = None

    @classmethod
    def from_folder(cls, folder: str | Path, version: int | None = None,
                    uri: str = "") -> Served:
        """From a SavedModel folder (its `assets.extra/`)."""
        extra = Path(folder) / ASSETS_EXTRA
        name = uri or str(folder)
        if not (extra / TRANSFORM_FILE).exists():
            raise InputError(f"model_base_path: the served version {name} has no "
                             f"{ASSETS_EXTRA}/{TRANSFORM_FILE}; it was not trained by conveyor")
        fitted = Fitted.load(extra)
        path = extra / STATISTICS_FILE
        if not path.exists():
            raise InputError(
                f"model_base_path: the served version {name} has no training statistics "
                f"({ASSETS_EXTRA}/{STATISTICS_FILE}); push it with the training data's statistics "
                "(push's `statistics` input, as the training pipeline does) to monitor it")
        try:
            statistics = DatasetStatistics.from_dict(json.loads(path.read_text()),
                                                     f"{name}/{ASSETS_EXTRA}/{STATISTICS_FILE}")
        except ValueError as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"model_base_path: {name}/{ASSETS_EXTRA}/{STATISTICS_FILE} is not "
                             f"JSON: {exc}") from None
        predictions = None
        if (extra / PREDICTIONS_FILE).exists():
            predictions = json.loads((extra / PREDICTIONS_FILE).read_text())
            if predictions.get("format") != PREDICTIONS_FORMAT:
                raise InputError(f"model_base_path: {name}/{ASSETS_EXTRA}/{PREDICTIONS_FILE} is "
                                 f"not {PREDICTIONS_FORMAT}")
        return cls(fitted, statistics, version, uri or str(folder), predictions)

    @property
    def baseline(self) -> SplitStatistics:
        return self.statistics.split("train")

    def columns_by_input(self) -> dict[str, str]:
        return {self.fitted.input_of(c): c for c in self.fitted.features}

    def column_type(self, column: str) -> str:
        stats = self.baseline.columns.get(column)
        if stats is not None:
            return stats.type
        f = self.fitted.features[column]
        if f["kind"] == "numeric":
            return "float64"
        if f["kind"] == "datetime":
            return f.get("dtype", "timestamp")
        return f.get("dtype", "string")


def load_served(model_base_path: str, scratch: str | Path) -> Served:
    """The served version under the base path (what `conveyor serve` serves by default: the
    champion when versions are labelled, else the newest), fetched into `scratch` on gs://."""
    from conveyor.registry import served_version

    served = served_version(model_base_path)
    if served is None:
        raise SourceNotFoundError(f"model_base_path: {model_base_path} has no published "
                                  "version to monitor")
    return Served.from_folder(served.folder(scratch), served.version, served.uri)
