"""The API's own Timestamp conversion agrees with protobuf's for every aware datetime."""

from __future__ import annotations

from datetime import datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from coalition.api.responses import timestamp

pytestmark = pytest.mark.unit


@given(st.datetimes(timezones=st.timezones()))
def test_a_timestamp_is_what_protobuf_makes_of_the_datetime(moment: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(moment)
    assert timestamp(moment) == expected


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(AssertionError):
        timestamp(datetime(2026, 12, 3, 12, 0))
