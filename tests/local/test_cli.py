import pytest

from conveyor import cli
from conveyor.gcp.hints import conveyor_command


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert cli.main(["local", "env", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("conveyor: error: no stack running under")


def test_debug_shows_the_traceback(tmp_path):
    from conveyor.errors import ConveyorError

    with pytest.raises(ConveyorError):
        cli.main(["--debug", "local", "env", "--root", str(tmp_path)])


def test_status_of_no_stack(tmp_path, capsys):
    assert cli.main(["local", "status", "--root", str(tmp_path)]) == 3
    assert "not running" in capsys.readouterr().out


def test_images_lists_every_variant(capsys):
    assert cli.main(["images", "--registry", "eu.gcr.io/acme"]) == 0
    out = capsys.readouterr().out.split("\n")
    assert out[0].startswith("cpu eu.gcr.io/acme/conveyor:")
    assert out[1].endswith("-gpu")


def test_run_without_local_points_to_submit(capsys):
    assert cli.main(["run"]) == 2
    assert "use `conveyor submit`" in capsys.readouterr().err


def test_run_local_without_a_pipeline_names_the_choices_and_the_demo(capsys):
    assert cli.main(["run", "--local"]) == 2
    err = capsys.readouterr().err
    assert "give a PIPELINE: batch_prediction, continuous_training, monitoring, training" in err
    assert "`conveyor demo`" in err


def test_run_local_refuses_a_pipeline_it_cannot_find_before_any_stack(capsys, tmp_path):
    assert cli.main(["run", str(tmp_path / "gone.yaml"), "--local",
                     "--root", str(tmp_path / "stack")]) == 2
    assert f"no such file {tmp_path / 'gone.yaml'}" in capsys.readouterr().err
    assert not (tmp_path / "stack").exists()


# -- local load / query / fetch: argument errors, before any stack is needed ------------------

@pytest.mark.parametrize("argv, words", [
    (["local", "load", "x.csv"], "give exactly one of --table dataset.table or --gcs"),
    (["local", "load", "x.csv", "--table", "d.t", "--gcs", "gs://b/x"], "exactly one of"),
    (["local", "query", "SELECT 1", "--max-rows", "-1"], "--max-rows must be 0 or more"),
    (["local", "query", "SELECT 1", "--out", "rows.xlsx"], "--out: cannot tell the format"),
    (["local", "fetch", "s3://bucket/model", "out"], "URI: 's3://bucket/model' is not a gs://"),
    (["local", "fetch", "gs:///model", "out"], "names no bucket"),
])
def test_bad_arguments_of_the_data_commands_are_named(tmp_path, capsys, monkeypatch, argv,
                                                      words):
    monkeypatch.setenv("CONVEYOR_STACK_DIR", str(tmp_path))  # no stack there, none needed
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("conveyor: error: ") and words in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["local", "load", "--table", "d.t"],             # no FILE
    ["local", "query"],                              # no SQL
    ["local", "fetch", "gs://b/p"],                  # no DIR
    ["local", "query", "SELECT 1", "--max-rows", "many"],
    ["local", "sync"],
])
def test_malformed_data_commands_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "usage: conveyor local" in capsys.readouterr().err


def test_data_commands_without_a_stack_say_how_to_start_one(tmp_path, capsys, monkeypatch):
    for key in ("CONVEYOR_BIGQUERY_ENDPOINT", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(key, raising=False)
    root = tmp_path / "my stack"
    assert cli.main(["local", "query", "SELECT 1", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    up = conveyor_command(f"local up --root '{root}'")
    assert f"no stack running under {root}; start it with `{up}`" in err


def test_root_is_taken_before_or_after_the_action(tmp_path, capsys):
    assert cli.main(["local", "--root", str(tmp_path), "status"]) == 3
    assert cli.main(["local", "status", "--root", str(tmp_path)]) == 3
    assert capsys.readouterr().out.count(f"not running (root {tmp_path})") == 2


def test_the_env_hint_of_up_names_a_given_root():
    from conveyor.local.stack import env_command

    assert env_command(None) == f'eval "$({conveyor_command("local env")})"'
    given = conveyor_command("local env --root '/tmp/a b'")
    assert env_command("/tmp/a b") == f'eval "$({given})"'


def test_query_rows_are_printed_aligned_with_nulls():
    from conveyor.local.commands import format_rows

    text = format_rows(["Id", "prix €"], [(1, None), (22, "a\nb")])
    assert text.splitlines() == ["Id  prix €", "--  ------", "1   NULL", "22  a\\nb"]
