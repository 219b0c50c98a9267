"""The compiled pipeline specs load in Vertex AI's PipelineJob (built offline, never submitted)."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("pipeline", ["training", "continuous_training"])
def test_compiled_spec_loads_in_vertex_pipeline_job(pipeline):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    job = aiplatform.PipelineJob(
        display_name=f"conveyor-{pipeline}",
        template_path=str(REPO / "pipelines" / pipeline / "pipeline.yaml"),
        pipeline_root="gs://acme-ml/pipeline-root",
        parameter_values={"model_base_path": "gs://acme-ml/models/penguins"},
        project="acme-ml", location="europe-west4", credentials=AnonymousCredentials(),
        enable_caching=False,
    )
    request = job._gca_resource
    assert request.runtime_config.gcs_output_directory == "gs://acme-ml/pipeline-root"
    assert request.runtime_config.parameter_values["model_base_path"] == \
        "gs://acme-ml/models/penguins"
    assert request.pipeline_spec["pipelineInfo"]["name"].startswith("conveyor-")
