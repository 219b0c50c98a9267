"""`conveyor.io.documents.read_mapping`, the one reader of a user's YAML/JSON file (a suite, a
feature spec): every failure names the file and what was wrong, and no message quotes a file
that does not look like the document asked for (issue 25, class 9: a system file passed as a
spec URI had its content printed to the console and the task log)."""

from __future__ import annotations

import pytest

from conveyor.errors import EXCERPT_CHARS, InputError
from conveyor.io.documents import read_mapping
from conveyor.transform.spec import FeatureSpec
from conveyor.validate.suite import load_suite

SECRET = "secretHASHq7Vx3kP9zR2mW8nL4tY6bC1dF5gJ0hK"
#: shaped like /etc/shadow: a YAML mapping whose keys are its lines
SHADOW = (f"root:$6$saltsalt${SECRET}:19700:0:99999:7:::\n"
          f"daemon:*:19700:0:99999:7:::\nalice:$6$pepper${SECRET[::-1]}:19700:0:99999:7:::\n")
KEYS = ("label", "task", "features")


def refused(path, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        read_mapping(path, "feature spec", KEYS, **kwargs)
    return str(err.value)


def assert_secret_free(message: str) -> None:
    for part in (SECRET, SECRET[::-1], SECRET[:12], "saltsalt", "pepper", "daemon", "alice"):
        assert part not in message, message


@pytest.mark.parametrize("text", [
    SHADOW,                                           # parses: a mapping of its lines
    SHADOW + "bad: [unclosed\n",                      # does not parse
    f"- {SECRET}\n- {SECRET}\n",                      # a list
    f"{SECRET}\n",                                    # one scalar
    "-----BEGIN OPENSSH PRIVATE KEY-----\n" + SECRET * 3 + "\n-----END OPENSSH PRIVATE KEY-----\n",
    f'{{"password": "{SECRET}", "user": "root"}}',    # JSON of another kind
    f"user: root\npassword: {SECRET}\n\tindent: {SECRET}\n",  # YAML error in another kind
])
def test_a_file_of_another_kind_is_refused_without_its_content(tmp_path, text):
    path = tmp_path / "shadow"
    path.write_text(text)
    message = refused(path)
    assert str(path) in message and message.startswith("feature spec: ")
    assert_secret_free(message)


@pytest.mark.parametrize("load", [FeatureSpec.load, load_suite])
def test_the_spec_readers_refuse_a_shadow_like_file_without_its_content(tmp_path, load):
    path = tmp_path / "shadow"
    path.write_text(SHADOW)
    with pytest.raises(InputError) as err:
        load(path)
    assert str(path) in str(err.value) and "content is not shown" in str(err.value)
    assert_secret_free(str(err.value))


def test_binary_and_non_utf8_files_are_refused_before_parsing(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"label: x\n\x00\x01" + SECRET.encode())
    assert "not a text file" in refused(binary)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"label: caf\xe9 " + SECRET.encode())
    message = refused(latin)
    assert "not UTF-8 text (byte 10" in message
    assert_secret_free(message)


def test_what_is_not_a_readable_regular_file_is_named(tmp_path):
    assert "cannot read" in refused(tmp_path / "missing.yaml")
    assert "No such file" in refused(tmp_path / "missing.yaml")
    assert "is not a regular file" in refused(tmp_path)
    assert "is not a regular file" in refused("/dev/zero")  # never read: it would never end


def test_a_parse_error_in_a_spec_gives_line_column_problem_and_a_short_excerpt(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("label: species\nfeatures:\n  island: {kind: categorical}\n"
                    f"  bill: {{kind: numeric}} {'z' * 200}: [\n")
    message = refused(path)
    assert "is neither YAML nor JSON (line 4, column" in message
    assert "expected <block end>" in message
    quoted = [part for part in message.split("'") if "zzz" in part]
    assert quoted and all(len(part) <= EXCERPT_CHARS for part in quoted), message
    assert "z" * EXCERPT_CHARS not in message


def test_an_unclosed_bracket_names_where_it_opened(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("columns:\n  species: {type: string\n")
    with pytest.raises(InputError) as err:
        load_suite(path)
    assert "(line 3, column 1): expected ',' or '}'" in str(err.value)
    assert "while parsing a flow mapping at line 2, column 12: '  species: {type: string'" \
        in str(err.value)


def test_a_json_spec_parses_and_a_mapping_with_a_known_key_reaches_the_caller(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('{"label": "y", "task": "binary", "features": {"x": {"kind": "numeric"}}}')
    assert read_mapping(path, "feature spec", KEYS)["label"] == "y"
    assert FeatureSpec.load(path).features["x"].kind == "numeric"
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbflabel: y\n")
    assert read_mapping(bom, "feature spec", KEYS) == {"label": "y"}


@pytest.mark.parametrize("text, words", [
    ("", "holds nothing (it is empty)"),
    ("[1, 2]", "holds a list of 2 item(s), not a mapping"),
    ("{}", "none of its 0 top-level key(s)"),
])
def test_empty_and_other_shapes_are_named(tmp_path, text, words):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    assert words in refused(path)


def test_a_local_copy_is_named_by_its_uri(tmp_path):
    path = tmp_path / "download"
    path.write_text(SHADOW)
    message = refused(path, name="gs://bucket/spec.yaml")
    assert "gs://bucket/spec.yaml" in message and str(path) not in message
