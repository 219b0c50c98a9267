"""Evaluate: metrics overall and per slice, a baseline comparison, thresholds and a blessing.
Logic: `conveyor.evaluate.evaluate.evaluate_model` (metrics in `conveyor.evaluate.metrics`), in
stages: `loading` (the SavedModels), `scoring` (the passes over the split), `verdict` (the
checks), `result` (what is found) and `outputs` (evaluation.json and the reports).
KFP component: `conveyor.evaluate.component.evaluate`.
"""
