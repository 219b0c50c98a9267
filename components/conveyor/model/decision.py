"""The decision threshold of a binary model: a row is predicted positive when its probability is
at least `THRESHOLD`. The serving signature's `class` and `class_label` outputs apply it
(`conveyor.train.export`), and evaluate's accuracy, precision, recall and confusion matrix are
read at it (`conveyor.evaluate.metrics`), so the report's figures are the served decisions'."""

from __future__ import annotations

THRESHOLD = 0.5
#: where the threshold comes from, as the reports say it
SOURCE = ("the serving signature's class and class_label outputs (probability >= 0.5, fixed at "
          "export)")
