"""The evaluate KFP component: a thin typed shell over `conveyor.evaluate.tasks`."""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def evaluate(
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    evaluation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    classification_metrics: dsl.Output[dsl.ClassificationMetrics],
    report: dsl.Output[dsl.Markdown],
    baseline_model: dsl.Input[dsl.Model] = None,
    model_base_path: str = "",
    split: str = "eval",
    slices: list = [],
    thresholds: dict = {},
) -> bool:
    """Evaluate a model overall and per slice, compare it with a baseline, and bless it or not.

    Args:
        model: The SavedModel to evaluate (through its serving signature).
        dataset: The Dataset holding the evaluation split.
        evaluation: evaluation.json: metrics per slice, baseline metrics, checks, blessing.
        metrics: Overall metrics of the model and of the baseline (baseline_ prefix).
        classification_metrics: ROC curve (binary) and confusion matrix, drawn by the UI.
        report: Markdown: checks, metrics per slice, candidate vs baseline.
        baseline_model: Baseline SavedModel; default: the newest version under model_base_path.
        model_base_path: Serving model base path (local or gs://) to find the baseline in.
        split: Split to evaluate on.
        slices: Columns whose values slice the metrics.
        thresholds: Per metric: min, max, min_improvement, min_improvement_relative.

    Returns:
        True when every check passed (the model is blessed); in dsl.If: task.outputs["Output"].
    """
    from conveyor.evaluate import tasks

    return tasks.evaluate(model, dataset, evaluation, metrics, classification_metrics, report,
                          baseline_model=baseline_model, model_base_path=model_base_path,
                          split=split, slices=slices, thresholds=thresholds)
