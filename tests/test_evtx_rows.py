"""parsers/evtx_rows.py: the flat payload fast path writes what the general walk writes."""

from __future__ import annotations

import msgspec
import pytest

from parsers.evtx_payload import decode_section, payload_json
from parsers.evtx_rows import flat_payload

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
