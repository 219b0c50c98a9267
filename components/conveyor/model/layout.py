"""The names of the files an exported model and its version folder keep, in one place.

A SavedModel written by train carries its extra files in `ASSETS_EXTRA`: the fitted transform
(`TRANSFORM_FILE`), the feature spec it was fitted from (`SPEC_FILE`) and, for classification,
the label classes (`LABELS_FILE`). Push adds the training data's statistics (`STATISTICS_FILE`,
validate's output) and the eval-time prediction statistics (`PREDICTIONS_FILE`, evaluate's
output) beside them, so monitor and the next validate can read them from the served version.
Evaluate's verdict is `EVALUATION_FILE` in its output folder, read by push.
"""

from __future__ import annotations

ASSETS_EXTRA = "assets.extra"           # a SavedModel's folder for files TensorFlow ignores
TRANSFORM_FILE = "transform.json"       # the fitted transform (conveyor.transform.fit.Fitted)
SPEC_FILE = "feature_spec.yaml"         # the feature spec the transform was fitted from
LABELS_FILE = "labels.txt"              # classification: the label classes, one a line
STATISTICS_FILE = "statistics.json"     # the training data's statistics (validate's output)
PREDICTIONS_FILE = "predictions.json"   # eval-time prediction statistics (model.predictions)
EVALUATION_FILE = "evaluation.json"     # evaluate's verdict, in its output folder
