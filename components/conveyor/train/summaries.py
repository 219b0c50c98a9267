"""What train leaves in TensorBoard beside the epoch scalars (Keras' callback, or
`conveyor.train.distributed` on several workers, in `<log_dir>/train` and `<log_dir>/validation`):
in `<log_dir>` itself, a run of its own,

- the hyper-parameters as resolved for this run, with its final figures, for the HParams
  dashboard (`tensorboard.plugins.hparams.api`): `final/<metric>` scalars (the exported epoch's
  loss and metrics, `epochs_run`, `best_epoch`, the rows trained and validated on);
- the exported epoch: a scalar `exported_epoch` (the epoch, counted from 1) at that epoch's step
  of the epoch charts (which count from 0), and a text `exported_epoch/why` saying which epoch was
  kept and why (lowest validation loss, or the last one without a validation loss) and why
  training stopped there (early stopping, or every epoch run).

Only the chief writes, once training has succeeded.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from conveyor.train.result import TrainResult


def hparam_values(result: TrainResult) -> dict[str, bool | int | float | str]:
    """The hyper-parameters as the HParams plugin takes them (a list as "64,32")."""
    hp = dataclasses.asdict(result.hyperparameters) if result.hyperparameters else {}
    values = {k: ",".join(str(x) for x in v) if isinstance(v, list) else v
              for k, v in hp.items()}
    values["workers"] = result.cluster.num_workers
    return values


def exported_epoch(result: TrainResult) -> int:
    """The exported epoch, counted from 0: the best one, else the last one run."""
    if result.best_epoch is not None:
        return result.best_epoch
    return max(result.first_epoch + result.epochs_run - 1, 0)


def why_exported(result: TrainResult) -> str:
    """Which epoch was kept and why, and why training stopped there, in a few sentences."""
    epoch = exported_epoch(result) + 1
    last = result.first_epoch + result.epochs_run
    planned = result.hyperparameters.epochs if result.hyperparameters else last
    patience = result.hyperparameters.early_stopping_patience if result.hyperparameters else 0
    val_loss = result.metrics.get("val_loss")
    rows = result.metrics.get("validation_rows")
    if result.best_epoch is not None and val_loss is not None:
        kept = (f"Epoch {epoch} of {last} was exported: its validation loss {val_loss:.6g} was "
                "the lowest" + (f" (on {int(rows):,} rows held out of the train split)"
                                if rows else "") + ".")
    else:
        kept = (f"Epoch {epoch}, the last of {last}, was exported: there was no validation "
                "loss to choose an epoch by (no rows held out).")
    stopped = (f" Training stopped early after epoch {last} of at most {planned}: the "
               f"validation loss had not improved for {patience} epochs "
               "(early_stopping_patience)." if last < planned and patience else
               f" Training ran all {planned} epochs.")
    resumed = (f" This run resumed from a checkpoint at epoch {result.first_epoch + 1}."
               if result.first_epoch else "")
    return (kept + stopped + resumed + f" On the epoch_* charts, epoch {epoch} is step "
            f"{epoch - 1} (they count from 0).")


def final_metrics(result: TrainResult) -> dict[str, float]:
    """`final/<metric>`: every finite figure of the run (at the exported epoch)."""
    return {f"final/{k}": float(v) for k, v in sorted(result.metrics.items())
            if isinstance(v, (int, float)) and math.isfinite(v)}


def write(log_dirs: list[str], result: TrainResult) -> None:
    """The hparams and the exported epoch into each of `log_dirs` (see the module). A log dir
    that cannot be written is named and skipped: the model is already exported."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    values = hparam_values(result)
    final = final_metrics(result)
    step = exported_epoch(result)
    text = why_exported(result)
    for log_dir in log_dirs:
        try:
            writer = tf.summary.create_file_writer(log_dir)
            with writer.as_default(step=step):
                hp_api.hparams_config(
                    hparams=[hp_api.HParam(name) for name in values],
                    metrics=[hp_api.Metric(tag, display_name=tag[len("final/"):])
                             for tag in final])
                hp_api.hparams(values)
                for tag, value in final.items():
                    tf.summary.scalar(tag, value)
                tf.summary.scalar("exported_epoch", float(step + 1),
                                  description="the epoch whose weights were exported, from 1")
                tf.summary.text("exported_epoch/why", text)
            writer.close()
        except Exception as exc:
            print(f"train: TensorBoard hparams and exported epoch not written to {log_dir}: "
                  f"{type(exc).__name__}: {exc}", flush=True)


def describe(result: TrainResult) -> dict[str, Any]:
    """The exported epoch (from 1) and why, for the train step's metadata."""
    return {"exported_epoch": exported_epoch(result) + 1, "why": why_exported(result)}
