"""A newcomer's first contact (issue 27), through the real `conveyor` command: the README's
own-table example, run as the README writes it on a fresh stack, succeeds on the first try; a
stopped or missing stack fails in seconds naming the commands that fix it; a misspelt table or
label gets the closest name, once; a pipe closed early (`| head`) ends a command quietly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_ports
from support.readme import REPO, blocks, clean_env, clone, commands, write_shops

from conveyor.gcp.hints import conveyor_command
from conveyor.local import progress


def conveyor(*args: str, env: dict[str, str] | None = None,
             timeout: float = 100) -> tuple[subprocess.CompletedProcess, float]:
    """The command as a user runs it: (the finished process, its wall seconds)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "conveyor", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)
    return done, time.monotonic() - started


# -- a stopped or missing stack: seconds, and the commands that fix it ----------------------------

def dead_endpoint() -> str:
    """A loopback address where nothing listens any more (as after `conveyor local down`)."""
    return f"127.0.0.1:{free_ports(1)[0]}"


@pytest.mark.parametrize("command, baseline", [
    (["run", "training", "--local", "--param", "table=mydata.shops", "--param", "label=Churned",
      "--param", "model_base_path=gs://shops-models/churn"],
     ["run", "training", "--local", "--param", "nope=1"]),
    (["local", "query", "SELECT 1"], ["local", "query", "SELECT 1", "--max-rows", "-1"]),
    (["local", "load", "shops.csv", "--table", "mydata.shops"], ["local", "load", "shops.csv"]),
])
def test_a_stopped_stack_fails_within_5_seconds_naming_the_commands(tmp_path, command, baseline):
    """The environment still names a stack that was stopped: the command fails at once (it
    used to wait out the clients' 120 s of retries, then print a raw ConnectionError). The
    bound is on the time beyond the same command's refusal of a bad argument, which pays the
    same start-up (imports) on a machine shared with other work."""
    dead = dead_endpoint()
    env = clean_env(CONVEYOR_BIGQUERY_ENDPOINT=f"http://{dead}",
                    CONVEYOR_BIGQUERY_STORAGE_ENDPOINT=dead, STORAGE_EMULATOR_HOST=f"http://{dead}",
                    CONVEYOR_STACK_DIR=str(tmp_path / "stack"))
    refused, start_up = conveyor(*baseline, env=env)
    assert refused.returncode == 2, refused.stderr
    done, seconds = conveyor(*command, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert seconds - start_up <= 5, (seconds, start_up)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "the local stack this environment points at does not answer" in done.stderr
    assert f"`{conveyor_command('local up')}`" in done.stderr
    assert f'`eval "$({conveyor_command("local env")})"`' in done.stderr
    assert not (tmp_path / "stack").exists()  # nothing was started behind the user's back


def test_no_stack_at_all_names_the_command_that_starts_it(tmp_path):
    root = tmp_path / "no stack here"
    done, seconds = conveyor("local", "query", "SELECT 1", "--root", str(root), env=clean_env())
    assert done.returncode == 1
    up = conveyor_command(f"local up --root '{root}'")
    assert done.stderr == f"conveyor: error: no stack running under {root}; start it with `{up}`\n"
    assert seconds < 60, seconds  # a bound, not a benchmark: nothing is waited for


# -- a pipe closed early ---------------------------------------------------------------------------

def closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """`conveyor ARGS | head -0`: stdout's reader is gone before the command writes."""
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=100)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err.decode())


@pytest.mark.parametrize("args, status", [
    (["images"], 141),  # as a shell reports a program stopped by SIGPIPE
    (["--help"], 0), (["local", "--help"], 0),  # argparse's help ignores a closed pipe itself
])
def test_output_into_a_closed_pipe_ends_quietly(args, status):
    done = closed_pipe(*args)
    assert done.stderr == "", done.stderr
    assert done.returncode == status


def test_the_run_console_falls_silent_when_its_reader_goes_away():
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    console = progress.Console(write_fd, tty=False)
    console.line("  start   preflight")  # no BrokenPipeError: the run goes on
    console.status("  ..      train")
    assert console.closed
    os.close(write_fd)


# -- on the emulators ---------------------------------------------------------------------------

def readme_commands(section: str, count: int) -> list[str]:
    """The first `count` commands of the first shell block after `section` in the README."""
    text = (REPO / "README.md").read_text()
    after = text[:text.index(section)].count("\n") + 1
    block = next(b for b in blocks() if b.lang == "sh" and b.line > after)
    return [command for _, command in commands(block)][:count]


@pytest.mark.local
@pytest.mark.slow
def test_the_readmes_own_table_example_succeeds_on_a_fresh_stack(tmp_path):
    """From the clone's folder (here: a folder with `.venv/bin/conveyor` and the user's
    shops.csv), the README's set-up lines of "The local stack", then its own-table lines, as
    written, by bash, on a stack that has never run: training (whose bucket does not exist
    yet), batch prediction into a new table, continuous training."""
    home = clone(tmp_path / "clone")
    setup = readme_commands("## The local stack", 2)  # up; eval "$(... local env)"
    assert setup[0].startswith(".venv/bin/conveyor local up") and "local env" in setup[1]
    own = readme_commands("## Running a pipeline locally", 4)  # load, train, predict, continuous
    assert [c.split()[:3] for c in own] == [
        [".venv/bin/conveyor", "local", "load"], [".venv/bin/conveyor", "run", "training"],
        [".venv/bin/conveyor", "run", "batch_prediction"],
        [".venv/bin/conveyor", "run", "continuous_training"]]
    shell = "set -e\n" + "".join(setup) + "".join(own)
    env = clean_env(CONVEYOR_STACK_DIR=str(tmp_path / "stack"))
    try:
        done = subprocess.run(["bash", "-c", shell], cwd=home, capture_output=True, text=True,
                              env=env, timeout=1500)
    finally:
        subprocess.run([".venv/bin/conveyor", "local", "down"], cwd=home, env=env,
                       capture_output=True, timeout=120)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    assert done.stderr == "", done.stderr
    assert "240 rows -> mydata.shops" in out
    assert out.count("created bucket gs://shops-models on the local stack "
                     "(model_base_path names it)") == 1
    assert "pushed version 1 -> gs://shops-models/churn/1" in out
    assert "240 rows predicted by version 1 -> conveyor-local.mydata.scored" in out
    assert "continuous_training: running" in out and "nothing drifted" in out
    # the pipeline's words only: no kfp task names, no line about the GPU branch
    assert not re.search(r"\b(train|evaluate|push|transform)-\d\b", out), out
    assert "gpu" not in out and "condition-" not in out and "branches" not in out
    assert out.count("  skip ") == 1  # continuous training: nothing drifted, nothing retrained
    assert "skip    transform, train, evaluate, push  (scheduled, drifted: conditions false)" \
        in out
    trained = Path(re.findall(r"^run folder: (.+)$", out, re.M)[0])
    assert (trained / "validate" / "report.html").read_text().lstrip().startswith("<!")
    assert (trained / "evaluate" / "html_report.html").is_file()
    assert sorted(p.name for p in trained.iterdir() if p.is_dir()) == [
        "bigquery-ingest", "evaluate", "logs", "preflight", "push", "train", "transform",
        "validate"]


@pytest.fixture(scope="module")
def shops_table(stack, tmp_path_factory) -> str:
    table = "first_contact.shops"
    done, _ = conveyor("local", "load", str(write_shops(tmp_path_factory.mktemp("csv") /
                                                        "shops.csv")), "--table", table,
                       "--replace", env=None)
    assert done.returncode == 0, done.stderr
    return table


@pytest.mark.local
@pytest.mark.parametrize("param, said", [
    ("table=first_contact.shop", ["table: BigQuery table conveyor-test.first_contact.shop not "
                                  "found (did you mean 'first_contact.shops'?); to load a CSV "
                                  "or Parquet file as this table on the local stack: `LOAD "
                                  "FILE --table first_contact.shop`"]),
    ("table=first_contat.shops", ["dataset conveyor-test.first_contat not found",
                                  "(did you mean 'first_contact.shops'?)"]),
    ("label=churned", ["label: 'churned' is not a column of table first_contact.shops (did "
                       "you mean 'Churned'?"]),
])
def test_a_wrong_name_gets_the_closest_match_once(shops_table, tmp_path, param, said):
    """A misspelt table, dataset or label: the closest existing name and, for a table on the
    local stack, the command that loads one; said once (not on the task's line, nor in the
    summary: on stderr), before any row is read."""
    params = {"table": shops_table, "label": "Churned",
              "model_base_path": "gs://first-contact/churn"}
    name, _, value = param.partition("=")
    params[name] = value
    args = ["run", "training", "--local", "--pipeline-root", str(tmp_path)]
    for key, val in params.items():
        args += ["--param", f"{key}={val}"]
    done, seconds = conveyor(*args, env=None, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    for words in said:
        assert words.replace("LOAD", conveyor_command("local load")) in done.stderr
    assert done.stderr.startswith("conveyor: error: task preflight failed: ")
    everything = done.stdout + done.stderr
    assert everything.count("did you mean") == 1, everything  # the error, once
    assert "  FAILED  preflight" in done.stdout and "bigquery-ingest " not in \
        done.stdout.replace("skip    bigquery-ingest", "")  # nothing after preflight ran
    assert seconds < 120, seconds  # a bound, not a benchmark: preflight reads no row


@pytest.mark.local
def test_a_query_into_a_closed_pipe_ends_quietly(shops_table):
    done = closed_pipe("local", "query", f"SELECT * FROM {shops_table}", "--max-rows", "240")
    assert done.stderr == "" and done.returncode == 141
