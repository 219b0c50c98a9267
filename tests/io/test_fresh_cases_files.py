"""Fresh cases for issue 25's classes 9 (a file's contents never echoed into an error) and 15
(a CSV's late type error names its column), written after the fixes and run once against them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conveyor.errors import InputError

SECRET = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7-secret-key-material"


def service_account_key(path):
    """What a user may pass by mistake: a service-account key file (valid JSON, a mapping)."""
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "shop-prod", "private_key_id": "abc123",
        "private_key": f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----\n",
        "client_email": "robot@shop-prod.iam.gserviceaccount.com"}))
    return path


@pytest.mark.parametrize("reader", ["feature_spec", "suite"])
def test_a_key_file_given_as_a_spec_is_refused_without_its_key(tmp_path, reader):
    from conveyor.transform.spec import FeatureSpec
    from conveyor.validate.suite import load_suite

    path = service_account_key(tmp_path / "key.json")
    load = FeatureSpec.load if reader == "feature_spec" else load_suite
    with pytest.raises(InputError) as caught:
        load(str(path))
    message = str(caught.value)
    assert str(path) in message
    assert "PRIVATE KEY" not in message and "secret-key" not in message, message
    assert len(message) < 600, message


@pytest.mark.parametrize("reader", ["feature_spec", "suite"])
def test_a_binary_file_given_as_a_spec_gets_a_short_printable_error(tmp_path, reader):
    from conveyor.transform.spec import FeatureSpec
    from conveyor.validate.suite import load_suite

    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 64 + b"label: y\n" + bytes(range(256)))
    load = FeatureSpec.load if reader == "feature_spec" else load_suite
    with pytest.raises(InputError) as caught:
        load(str(path))
    message = str(caught.value)
    assert str(path) in message
    assert message.isprintable(), repr(message)
    assert len(message) < 600, message


@pytest.mark.local
def test_a_late_bad_value_under_a_quoted_header_with_a_comma_is_named(stack, tmp_path):
    """The bad value is in the last column, whose quoted header holds a comma, past 16 MiB."""
    path = tmp_path / "late.csv"
    line = "1,alpha,2.5,17\n"
    with path.open("w") as out:
        out.write('id,name,score,"amount, usd"\n')
        out.write(line * ((17 << 20) // len(line)))
        out.write("2,beta,3.5,seventeen\n")
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "local", "load", str(path), "--table",
         "fresh_files.late"], capture_output=True, text=True, timeout=900)
    assert done.returncode != 0, done.stdout
    assert "amount, usd" in done.stderr, done.stderr[-2000:]
    assert "#0" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
