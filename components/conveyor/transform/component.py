"""The transform KFP component: a thin typed shell over `conveyor.transform.tasks`."""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def transform(
    dataset: dsl.Input[dsl.Dataset],
    preprocessing: dsl.Output[dsl.Artifact],
    statistics: dsl.Input[dsl.Artifact] = None,
    label: str = "",
    task: str = "",
    feature_spec_uri: str = "",
    train_split: str = "train",
    spec_model_base_path: str = "",
):
    """Fit preprocessing (z-scores, buckets, vocabularies, label classes) on the train split.

    Args:
        dataset: The Dataset to fit on.
        preprocessing: transform.json (fitted, readable) and feature_spec.yaml.
        statistics: Validate's statistics artifact of this dataset: the fit takes its figures instead of reading the rows (what they cannot serve, e.g. statistics of another dataset, is read, with a line saying why).
        label: Label column, to propose a feature spec when feature_spec_uri is not given.
        task: binary, multiclass or regression (with label; default: from the label's values).
        feature_spec_uri: Path or gs:// URI of a feature spec (YAML or JSON).
        train_split: Split to fit on.
        spec_model_base_path: Model base path whose newest version's feature spec is reused (when feature_spec_uri is empty and it fits the data).
    """
    from conveyor.transform import tasks

    tasks.transform(dataset, preprocessing, label=label, task=task,
                    feature_spec_uri=feature_spec_uri, train_split=train_split,
                    spec_model_base_path=spec_model_base_path, statistics=statistics)
