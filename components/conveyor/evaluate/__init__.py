"""Evaluate: metrics overall and per slice, a baseline comparison, thresholds and a blessing.
Logic: `conveyor.evaluate.evaluate.evaluate_model` (metrics in `conveyor.evaluate.metrics`).
KFP component: `conveyor.evaluate.component.evaluate`.
"""
