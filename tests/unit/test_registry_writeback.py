"""Tag value truncation and the tag names the write-back uses."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from registry.writeback import MAX_TAG_VALUE_CHARS, timestamp_tag, truncate_tag_value


def test_short_values_are_kept_whole() -> None:
    assert truncate_tag_value("") == ""
    assert truncate_tag_value("x" * MAX_TAG_VALUE_CHARS) == "x" * MAX_TAG_VALUE_CHARS


@given(st.text(min_size=0, max_size=400), st.integers(min_value=40, max_value=200))
def test_truncated_values_fit_and_say_how_much_was_cut(value: str, limit: int) -> None:
    cut = truncate_tag_value(value, limit)
    assert len(cut) <= limit
    if len(value) <= limit:
        assert cut == value
        return
    assert len(cut) == limit
    found = re.search(r"…\[truncated (\d+) chars\]$", cut)
    assert found is not None
    kept = limit - len(found.group(0))
    assert cut[:kept] == value[:kept]
    assert int(found.group(1)) == len(value) - kept


def test_timestamp_tags_are_named_for_the_status() -> None:
    assert timestamp_tag("promoted") == "modelrollout.promoted_at"
    assert timestamp_tag("rolled_back") == "modelrollout.rolled_back_at"
