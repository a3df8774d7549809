"""parsers/evtx_rows.py: the fast paths (flat payloads, event times) give what the general
ones give."""

from __future__ import annotations

from datetime import datetime

import msgspec
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers.evtx_payload import decode_section, payload_json
from parsers.evtx_rows import event_times, flat_payload

SECTIONS = {
    "text and integers": '{"ProcessID":1104,"Application":"\\\\device\\\\x.exe","Port":"445"}',
    "negative and 18 digits": '{"a":-5,"b":123456789012345678,"c":0}',
    "escapes pyevtx-rs writes": (
        '{"List":"%%1537\\r\\n\\t%%1538","Odd":"\\u000F-","Q":"say \\"hi\\""}'
    ),
    "a key written twice": '{"LogonGuid":"{1}","LogonGuid":"{2}","N":1}',
    "colon-quote inside a value": '{"a":"x\\":1","b":2}',
    "nested": '{"Data":{"#attributes":{"Name":"x"},"#text":"v"}}',
    "null, float, bool": '{"a":null,"b":1.5,"c":true}',
    "beyond 64 bits": '{"a":123456789012345678901234567890}',
    "empty": "{}",
    "null section": "null",
    "non-ASCII": '{"Name":"Grüße 日本","Path":"C:\\\\Temp\\\\"}',
}


@pytest.mark.parametrize("section", SECTIONS.values(), ids=SECTIONS.keys())
def test_flat_payload_is_the_general_walk_or_declines(section: str) -> None:
    raw = _raw(section)
    general = payload_json([("EventData", decode_section(raw))])
    fast = flat_payload(raw)
    assert fast is None or fast == general


def test_flat_payload_takes_the_common_events() -> None:
    """Most events are flat: the fast path must not decline them all (it would be slow, not
    wrong); a repeated key must go the general way, which numbers the repeat."""
    taken = [k for k, s in SECTIONS.items() if flat_payload(_raw(s)) is not None]
    assert {"text and integers", "negative and 18 digits", "escapes pyevtx-rs writes"} <= set(taken)
    assert "a key written twice" not in taken
    assert payload_json([("EventData", decode_section(_raw(SECTIONS["a key written twice"])))]) == (
        '{"LogonGuid":"{1}","LogonGuid_1":"{2}","N":"1"}'
    )


def _raw(section: str) -> msgspec.Raw:
    return msgspec.json.decode(f'{{"s":{section}}}', type=dict[str, msgspec.Raw])["s"]


# --- event times: the fixed-width parse, and the general one where it reads nothing ----

_ODD_TIMES = [
    "2025-03-04T09:35:43.591590Z",  # pyevtx-rs's form
    "2025-03-04T09:35:43.59159Z",  # five digits of fraction: the general parse only
    "2025-03-04T09:35:43.5915901Z",
    "2021-11-19T16:52:33.833733500Z",  # nine digits: a forwarded (WEC) Exchange log
    "2025-03-04T09:35:43Z",
    "2025-03-04T09:35:4.3591590Z",
    "2025-3-4T9:35:43.591590Z",
    "2016-12-31T23:59:60.000000Z",  # a leap second
    "2024-02-29T00:00:00.000000Z",
    "2025-02-29T00:00:00.000000Z",
    "0000-01-01T00:00:00.000000Z",
    "9999-12-31T23:59:59.999999Z",
    "1601-01-01T00:00:00.000000Z",  # FILETIME zero
    "1969-12-31T23:59:59.999999Z",
    " 2025-03-04T09:35:43.591590Z",
    "+2025-03-04T09:35:43.591590Z",
    "-0001-03-04T09:35:43.591590Z",
    "2025-03-04T09:35:43.591590",
    "2025-03-04 09:35:43.591590Z",
    "2025-03-04T24:00:00.000000Z",
    "2025-03-04T09:35:43,591590Z",
    "\uff12\uff10\uff12\uff15-03-04T09:35:43.591590Z",  # full-width digits
    "",
    None,
]


def _general(texts: pl.Series) -> pl.Series:
    """The reference: the general format alone, as times were parsed before."""
    return texts.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC", strict=False
    )


def _same_times(texts: list[str | None]) -> None:
    series = pl.Series("time", texts, dtype=pl.String)
    got, want = event_times(series), _general(series)
    assert got.dtype == want.dtype
    assert got.dt.epoch("us").to_list() == want.dt.epoch("us").to_list(), texts


def test_event_times_are_those_of_the_general_format() -> None:
    _same_times(_ODD_TIMES)
    _same_times(_ODD_TIMES[:1] * 3)  # all in pyevtx-rs's form: the fixed parse alone
    _same_times([None, ""])


_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.lists(st.tuples(st.integers(0, 30), st.sampled_from([*"0123456789-:.TZ +", ""])),
             max_size=3),
    _DIGITS,
)  # fmt: skip
def test_event_times_of_altered_texts_are_those_of_the_general_format(
    moment: datetime, edits: list[tuple[int, str]], fraction: str
) -> None:
    """pyevtx-rs's form, and that form with characters replaced or dropped, or another
    fraction: wherever the fixed-width parse reads a time, it is the general one's."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    altered = text
    for at, piece in edits:
        altered = altered[:at] + piece + altered[at + 1 :]
    _same_times([text, altered, text[:20] + fraction + "Z"])
