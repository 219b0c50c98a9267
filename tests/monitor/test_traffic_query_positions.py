"""A syntax error in the monitor's traffic query, against the BigQuery emulator (issue 25, class
12): reported at its line in the user's query, not in the SQL conveyor wraps around it to
select the window's rows."""

from __future__ import annotations

import datetime

import pytest

from conveyor.errors import InputError
from conveyor.io import Dataset
from conveyor.monitor.served import Served
from conveyor.monitor.sources import read_bigquery
from conveyor.monitor.window import window
from conveyor.transform.fit import Fitted
from conveyor.validate.stats import compute_statistics

pytestmark = pytest.mark.local


def test_a_syntax_error_in_the_traffic_query_is_reported_in_the_users_text(
        stack, penguins, penguin_transform):
    served = Served(Fitted.load(penguin_transform / "t"),
                    compute_statistics(Dataset(penguin_transform / "ds")))
    start = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    win = window(start=start.isoformat(), end=(start + datetime.timedelta(hours=1)).isoformat())
    query = f"SELECT *,\n  CURRENT_TIMESTAMP() AS timestamp\nFRM {penguins}"
    with pytest.raises(InputError) as err:
        read_bigquery(win, served, query=query)
    message = str(err.value)
    assert message.startswith("traffic query: BigQuery rejected the query: Syntax error"), message
    assert "; at line 3, column " in message and f"of the query: 'FRM {penguins}'" in message, \
        message
    assert "[4:" not in message and "Line 4," not in message, message  # the wrapper's line
