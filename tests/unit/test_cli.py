import pytest

from conveyor import cli


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
