"""The preflight KFP component: a thin typed shell over `conveyor.preflight.checks`."""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def preflight(
    label: str,
    model_base_path: str,
    table: str = "",
    query: str = "",
    split_key: str = "",
    split_ratios: dict = {"train": 0.8, "eval": 0.2},
    slices: list = [],
    feature_spec_uri: str = "",
    project: str = "",
    location: str = "",
) -> str:
    """Check, before any row is read, what would fail later: parameters, the model base path, the source's columns.

    Args:
        label: Label column; must be a column of the source.
        model_base_path: Where versions are pushed; its bucket must exist and take an object.
        table: Source table (or give query).
        query: Source query, instead of table.
        split_key: Column that decides each row's split; must be a column of the source.
        split_ratios: Split names and shares; must include the eval split.
        slices: Columns that slice the evaluation; each must be a column of the source.
        feature_spec_uri: Feature spec, when the label comes from it.
        project: Project that runs the BigQuery dry run.
        location: BigQuery location.
    """
    from conveyor.preflight import checks

    result = checks.check(label=label, model_base_path=model_base_path, table=table,
                          query=query, split_key=split_key, split_ratios=split_ratios,
                          slices=slices, feature_spec_uri=feature_spec_uri, project=project,
                          location=location)
    print(result.summary(), flush=True)
    return result.summary()
