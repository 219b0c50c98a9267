"""What tests import (not fixtures: those stay in the conftest.py files). `tests/` is on
pytest's `pythonpath` (pyproject.toml), so a test says `from support import write_dataset`.

- `support.data`: Dataset artifacts written as ingest writes them, the penguins suite file.
- `support.evaluations`: binary evaluation results from scores counted by hand.
- `support.models`: a fitted transform and a trained model, built the way the steps build them;
  a check that an exported model's signature serves.
- `support.mlflow_server`: a real MLflow tracking server on loopback.
- `support.network`: free loopback ports, a loopback stand-in for a cloud API.
- `support.serving`: `conveyor serve` as a process (`Serve`) or an in-process app, HTTP calls,
  a hand-moved clock, a bounded wait.
- `support.tfjob_operator`: a stand-in Kubernetes API and Training Operator on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

from support.data import PENGUINS_SUITE, key_landing_in, write_dataset
from support.evaluations import HAND_P, HAND_Y, accumulated, binary_result
from support.mlflow_server import mlflow_server
from support.models import HPARAMS, fit_transform, train_model
from support.network import free_ports, loopback_api

#: The repository's root folder.
REPO = Path(__file__).resolve().parents[2]

__all__ = ["HAND_P", "HAND_Y", "HPARAMS", "PENGUINS_SUITE", "REPO", "accumulated",
           "binary_result", "fit_transform", "free_ports", "key_landing_in", "loopback_api",
           "mlflow_server", "train_model", "write_dataset"]
