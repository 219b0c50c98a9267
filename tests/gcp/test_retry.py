"""conveyor's retry policy: what is retried, how long, and the error when it gives up."""

import pytest
import requests
from google.api_core import exceptions

from conveyor.gcp import retry


@pytest.mark.parametrize("error", [
    exceptions.TooManyRequests("x"), exceptions.InternalServerError("x"),
    exceptions.BadGateway("x"), exceptions.ServiceUnavailable("x"), exceptions.GatewayTimeout("x"),
    ConnectionResetError(), requests.exceptions.ConnectionError(),
    requests.exceptions.ChunkedEncodingError(), requests.exceptions.ReadTimeout(),
])
def test_transient_errors_are_retried(error):
    assert retry.is_retryable(error)


def test_storage_upload_errors_are_judged_by_their_status():
    from google.cloud.storage.exceptions import InvalidResponse

    def answer(status):
        response = requests.Response()
        response.status_code = status
        return InvalidResponse(response, "upload failed")

    assert retry.is_retryable(answer(503)) and retry.storage()._predicate(answer(429))
    assert not retry.is_retryable(answer(403)) and not retry.storage()._predicate(answer(412))


@pytest.mark.parametrize("error", [
    exceptions.BadRequest("x"), exceptions.Forbidden("x"), exceptions.NotFound("x"),
    exceptions.Conflict("x"), exceptions.PreconditionFailed("x"), ValueError("x"),
    requests.exceptions.SSLError(),
])
def test_permanent_errors_are_not(error):
    assert not retry.is_retryable(error)


def test_deadline_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(retry.DEADLINE_ENV, raising=False)
    assert retry.deadline() == retry.DEFAULT_DEADLINE
    monkeypatch.setenv(retry.DEADLINE_ENV, "7.5")
    assert retry.deadline() == 7.5
    assert retry.storage().timeout == 7.5 and retry.bigquery().timeout == 7.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(retry.DEADLINE_ENV, bad)
        with pytest.raises(ValueError, match=retry.DEADLINE_ENV):
            retry.deadline()


def test_a_call_is_retried_until_it_succeeds_and_a_permanent_error_at_once():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise exceptions.ServiceUnavailable("try again")
        return "ok"

    assert retry.storage()(flaky)() == "ok" and len(calls) == 3

    calls.clear()

    def missing():
        calls.append(1)
        raise exceptions.NotFound("gs://b/o")

    with pytest.raises(exceptions.NotFound):
        retry.storage()(missing)()
    assert len(calls) == 1


def test_giving_up_names_the_operation_and_the_deadline(monkeypatch):
    monkeypatch.setenv(retry.DEADLINE_ENV, "0.2")

    @retry.giving_up("ingest from BigQuery")
    def down():
        retry.storage()(lambda: (_ for _ in ()).throw(exceptions.ServiceUnavailable("down")))()

    with pytest.raises(retry.ServiceUnavailableError,
                       match=r"ingest from BigQuery: still failing after 0.2 s of retries "
                             r"\(CONVEYOR_RETRY_DEADLINE\); last error: ServiceUnavailable"):
        down()

    with pytest.raises(exceptions.NotFound):  # a permanent error passes through unchanged
        with retry.giving_up("x"):
            raise exceptions.NotFound("gone")
