"""Bad input fails the run once, in seconds: task retries (kept for preemption and outages) do not
redo the work of a task that failed on bad input (`conveyor.failfast`)."""

import time

import pytest

from conveyor import errors
from conveyor.failfast import fail_once, marker

pytestmark = pytest.mark.local


def test_a_recorded_input_error_ends_later_attempts_before_any_work(tmp_path):
    out = tmp_path / "task" / "dataset"
    runs = []
    with pytest.raises(errors.EmptyDataError):
        with fail_once(out, "ingest"):
            runs.append(1)
            raise errors.EmptyDataError("query: the result has no rows; nothing to ingest")
    assert marker(out).exists()
    with pytest.raises(errors.EmptyDataError, match="nothing to ingest .*not retried"):
        with fail_once(out, "ingest"):
            runs.append(2)
    assert runs == [1]


def test_other_failures_stay_retryable(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with fail_once(out, "train"):
            raise RuntimeError("node preempted")
    assert not marker(out).exists()
    with fail_once(out, "train"):
        pass


@pytest.mark.slow
def test_an_empty_split_fails_the_pipeline_in_seconds_with_the_work_done_once(
        penguins, kfp_local, tmp_path, capfd):
    from conveyor.pipelines import training

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="bigquery-ingest"):
        training.pipeline(table=penguins, label="species",
                          model_base_path=str(tmp_path / "models"),
                          split_ratios={"train": 0.9999, "eval": 0.0001})
    elapsed = time.monotonic() - started
    log = capfd.readouterr()
    text = log.out + log.err
    # The first attempt did the work and named the problem; the two retries only repeated it.
    assert text.count("not retried; an earlier attempt failed on this input") == 2
    assert "would be empty" in text
    assert not (tmp_path / "models").exists()
    with capfd.disabled():
        print(f"empty split: the run failed {elapsed:.1f} s after it started")
    assert elapsed < 60, elapsed  # a bound (three attempts, 2 + 4 s backoff), not a benchmark
