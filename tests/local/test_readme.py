"""The README works verbatim (issue 27): every shell and Python block a user would run is run
as written, in README order, by one bash session, in a folder that stands for a fresh clone
(`support.readme.clone`), on a fresh local stack. `make demo` runs the demo; `make test` is
checked (the Makefile has it and .ci/run calls it), never run: it runs this test. Blocks marked
`<!-- readme-test: needs-gcp -->` or `needs-docker` are checked offline: `--dry-run` where the
command has one, else its `--help` names every option the README uses, and `make -n` for make
targets. YAML samples load through conveyor's own loaders; blocks without a fence language are
output samples and diagrams. A failing block names its README line and shows stderr's tail."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from support.readme import MARKERS, README, Block, blocks, clean_env, clone, commands

RUN = ("sh", "python")
OFFLINE = ("needs-gcp", "needs-docker")


def test_every_block_is_run_loaded_or_marked():
    """A block in a new fence language, or with an unknown marker, is a decision to make
    here, not a block silently left out."""
    found = blocks()
    assert len(found) >= 15
    for block in found:
        assert block.lang in ("sh", "python", "yaml", ""), block.where()
        assert block.marker in ("", *MARKERS), f"{block.where()}: marker {block.marker!r}"
        if block.marker in OFFLINE:
            assert block.lang == "sh", block.where()
    assert [b.lang for b in found if b.lang in RUN and not b.marker][:2] == ["sh", "python"]


def is_make_test(command: str) -> bool:
    return command.split()[:2] == ["make", "test"]


def test_make_test_is_what_ci_runs(tmp_path):
    """The set-up block's `make test`: a Makefile target, and what .ci/run runs (running it
    here would run this test again)."""
    home = clone(tmp_path)
    first = next(b for b in blocks() if b.lang == "sh")
    lines = [c for _, c in commands(first)]
    assert [c.split()[:2] for c in lines] == [["make", "demo"], ["make", "test"]], first.where()
    dry = subprocess.run(["make", "-n", "test"], cwd=home, capture_output=True, text=True)
    assert dry.returncode == 0 and "-m pytest" in dry.stdout, dry.stdout + dry.stderr
    assert "make test" in (home / ".ci" / "run").read_text().splitlines()


# -- YAML samples: conveyor's own loaders ------------------------------------------------------

@pytest.mark.parametrize("block", [b for b in blocks() if b.lang == "yaml"],
                         ids=lambda b: f"line{b.line}")
def test_yaml_samples_load(block, tmp_path):
    from conveyor.io.documents import read_mapping
    from conveyor.transform.spec import FeatureSpec
    from conveyor.validate.suite import SUITE_KEYS, SuiteSpec

    path = tmp_path / "sample.yaml"
    path.write_text(block.text)
    data = yaml.safe_load(block.text)
    if "features" in data:
        spec = FeatureSpec.load(path)
        assert set(spec.features) == set(data["features"]), block.where()
    elif "columns" in data:  # as load_suite reads a spec (turning it into GX's takes 12 s)
        suite = SuiteSpec.from_dict(read_mapping(path, "suite", SUITE_KEYS), str(path))
        assert suite.columns.keys() == data["columns"].keys(), block.where()
    else:
        pytest.fail(f"{block.where()}: neither a feature spec nor a suite; no loader to try")


# -- blocks that need Google Cloud, Kubeflow or Docker: offline --------------------------------

def _sh(home: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=home, capture_output=True, text=True, timeout=300,
                          env=clean_env())


def check_offline(home: Path, line: int, command: str) -> str:
    """Check one command without sending anything; returns what was checked."""
    argv = shlex.split(command.replace("\\\n", " "), comments=True)
    where = f"README.md line {line}: {' '.join(argv)[:100]}"
    if argv[0] == "make":
        done = _sh(home, "make", "-n", *argv[1:])
        assert done.returncode == 0, f"{where}\n{done.stderr[-2000:]}"
        return "make -n"
    if argv[0] == "curl":
        body = json.loads(argv[argv.index("-d") + 1])
        assert body.get("instances"), where
        if argv[-1].endswith("/v1/models/penguins:predict"):
            from conveyor.demo import EXAMPLE  # the row the demo has its served model answer
            assert body == {"instances": [EXAMPLE]}, where
        return "its JSON body"
    assert argv[0] == ".venv/bin/conveyor", f"{where}: no offline check for {argv[0]}"
    sub = argv[1:3] if argv[1] == "local" else argv[1:2]
    usage = _sh(home, argv[0], *sub, "--help")
    assert usage.returncode == 0, f"{where}\n{usage.stderr[-2000:]}"
    for option in (a.split("=")[0] for a in argv[1:] if a.startswith("--")):
        assert option in usage.stdout, f"{where}: `{' '.join(sub)}` has no {option}"
    if "--dry-run" not in usage.stdout or "..." in argv:
        return "--help"
    dry = _sh(home, *argv, "--dry-run")
    assert dry.returncode == 0, f"{where} --dry-run\n{dry.stderr[-2000:]}"
    assert dry.stdout.strip(), where
    return "--dry-run"


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in blocks() if b.marker in OFFLINE],
                         ids=lambda b: f"line{b.line}")
def test_blocks_that_need_gcp_or_docker_check_offline(block, tmp_path):
    home = clone(tmp_path)
    checked = [check_offline(home, line, command) for line, command in commands(block)]
    assert checked, block.where()


# -- every other block, verbatim, in one shell session -----------------------------------------

def session_script(run: list[Block], logs: Path) -> tuple[str, dict[int, tuple[Block, int]]]:
    """The bash script that runs `run` in order, and, for each of its lines, the block and the
    README line it comes from. Each block's stdout and stderr go to `logs/L<line>.out|.err`,
    its start and end times to `logs/times`; the first failing command stops the session and
    leaves its script line in `logs/failed`."""
    lines = ["set -e", f"L={shlex.quote(str(logs))}",
             "trap 'echo $LINENO > \"$L/failed\"' ERR"]
    where: dict[int, tuple[Block, int]] = {}

    def add(text: str, block: Block, readme_line: int) -> None:
        lines.append(text)
        where[len(lines)] = (block, readme_line)

    for block in run:
        n = block.line
        lines.append(f'exec >"$L/L{n}.out" 2>"$L/L{n}.err"; echo "{n} $EPOCHREALTIME" >>"$L/times"')
        if block.lang == "python":
            first = block.text.splitlines()[0]
            named = re.fullmatch(r"# (\w+\.py)", first.strip())
            opener = f"cat > {named.group(1)}" if named else ".venv/bin/python -"
            add(f"{opener} <<'README_PYTHON_BLOCK'", block, n)
            for i, text in enumerate(block.text.splitlines()):
                add(text, block, n + i)
            add("README_PYTHON_BLOCK", block, n)
        else:
            for line, command in commands(block):
                for i, text in enumerate(command.splitlines()):
                    add(f"# checked, not run: {text}" if is_make_test(command) else text,
                        block, line + i)
        lines.append(f'echo "{n} $EPOCHREALTIME" >>"$L/times"')
    return "\n".join(lines) + "\n", where


def failure(logs: Path, where: dict[int, tuple[Block, int]], done,
            lines: list[str] | None = None) -> str:
    """What a failed session says: the README line and its text (`lines`: the README's),
    the tails of the block's output."""
    failed = (logs / "failed").read_text().strip() if (logs / "failed").exists() else ""
    if not failed or int(failed) not in where:
        return f"the session failed outside any block:\n{done.stderr[-3000:]}"
    block, line = where[int(failed)]
    err = (logs / f"L{block.line}.err").read_text()
    out = (logs / f"L{block.line}.out").read_text()
    traceback = re.findall(r'File "<stdin>", line (\d+)', err)
    if block.lang == "python" and traceback:
        line = block.line + int(traceback[-1]) - 1
    text = README.read_text().splitlines() if lines is None else lines
    return (f"README.md line {line} failed ({block.lang} block at line {block.line}): "
            f"{text[line - 1].strip()}\n--- stderr (tail) ---\n{err[-3000:]}"
            f"\n--- stdout (tail) ---\n{out[-1500:]}")


def block_seconds(logs: Path) -> dict[int, float]:
    marks: dict[int, list[float]] = {}
    for row in (logs / "times").read_text().split("\n"):
        if row:
            n, t = row.split()
            marks.setdefault(int(n), []).append(float(t))
    return {n: t[1] - t[0] for n, t in marks.items() if len(t) == 2}


def run_session(run: list[Block], home: Path, logs: Path, env: dict[str, str]):
    script, where = session_script(run, logs)
    (logs / "session.sh").write_text(script)
    done = subprocess.run(["bash", str(logs / "session.sh")], cwd=home, capture_output=True,
                          text=True, env=env, timeout=1500)
    return done, where


def test_a_failing_block_is_named_by_its_readme_line(tmp_path):
    """The session's own machinery: state carries from block to block, the set-up block's
    `make test` is not run, and the first failing command stops the session, named by its
    README line with its stderr's tail (a Python block's by its traceback's line)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    run = [Block(10, "sh", "make test STEP=nothing\nexport GREETING=hello\n"),
           Block(20, "python", "import os\nassert os.environ['GREETING'] == 'hello'\n"),
           Block(30, "sh", "echo fine\nls /no/such/folder \\\n    --all\necho never\n")]
    home = clone(tmp_path / "clone")
    done, where = run_session(run, home, logs, clean_env())
    assert done.returncode != 0
    said = failure(logs, where, done, lines=["x"] * 40)
    assert said.startswith("README.md line 31 failed (sh block at line 30)"), said
    assert "No such file or directory" in said and "fine" in said
    assert not (logs / "L30.out").read_text().count("never")
    run[1] = Block(20, "python", "import os\n\nraise SystemExit(os.environ['NOPE'])\n")
    done, where = run_session(run[:2], home, logs, clean_env())
    said = failure(logs, where, done, lines=["x"] * 40)
    assert said.startswith("README.md line 22 failed (python block at line 20)"), said
    assert "KeyError: 'NOPE'" in said


@pytest.mark.local
@pytest.mark.slow
def test_the_readme_runs_verbatim_on_a_fresh_stack(tmp_path):
    home = clone(tmp_path / "clone")
    logs = tmp_path / "logs"
    logs.mkdir()
    run = [b for b in blocks() if b.lang in RUN and not b.marker]
    env = clean_env(CONVEYOR_STACK_DIR=str(tmp_path / "stack"))
    try:
        done, where = run_session(run, home, logs, env)
    finally:
        subprocess.run([".venv/bin/conveyor", "local", "down"], cwd=home, env=env,
                       capture_output=True, timeout=120)
    seconds = block_seconds(logs)
    print("README block seconds: " + ", ".join(f"line {n}: {s:.1f}" for n, s in seconds.items()))
    assert done.returncode == 0, failure(logs, where, done)
    for block in run:  # warnings, tracebacks and kfp's logs go to the run's log files
        err = (logs / f"L{block.line}.err").read_text()
        assert err == "", f"{block.where()} wrote to stderr:\n{err[-3000:]}"
    demo = (logs / f"L{run[0].line}.out").read_text()
    assert "[demo] answer: " in demo and "[demo] stack stopped" in demo, demo[-3000:]
    epochs, best = map(int, re.search(r"train .* (\d+) epochs \(best (\d+)\)", demo).groups())
    assert best < epochs < 200, demo  # stopped early: fewer epochs than its bound
