"""EventData / UserData -> one flat JSON object: the payload naming rules, once.

Problem: an event's payload is an XML fragment whose shape depends on the
provider (named ``<Data Name=..>``, unnamed ``<Data>``, a ``UserData`` wrapper
element with nested children). The pipeline wants one flat ``name -> text``
object per row, identical whichever engine decoded the record.

Both engines hand this module the same intermediate form: the JSON shape that
pyevtx-rs (the evtx crate) produces for a record. The rust engine gets it for
free; the python engine builds it (parsers/evtx_python.py). The rules below,
documented for users in docs/schema.md, are applied to that one form:

* Payload sections are ``EventData``, ``UserData`` and ``ProcessingErrorData``,
  in document order. The sections' own attributes (e.g. ``EventData Name=``, a
  template name) and the ``UserData`` wrapper element (e.g. ``VmlEventLog``) are
  not keys: the wrapper's children are.
* ``<Data Name="X">`` -> key ``X``. A direct child of ``EventData`` with a
  ``Name`` attribute (e.g. ``ComplexData``) is keyed by that name too.
* Unnamed ``<Data>`` -> ``Data_0``, ``Data_1``, ... in document order.
* Other elements -> their tag; nested elements join their tags with ``.``;
  attributes of payload elements (except ``xmlns`` declarations) are keyed like
  child elements (``Elem.attr``).
* A key seen twice gets ``_1``, ``_2``, ... (as the evtx crate names repeats).
* Values are text as pyevtx-rs renders them: numbers in decimal, booleans
  ``true``/``false``, an empty or null value ``""``, hex types ``0x..``,
  binary as upper-case hex, arrays joined with ``,``.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

PAYLOAD_SECTIONS: tuple[str, ...] = ("EventData", "UserData", "ProcessingErrorData")

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
_ATTRS = "#attributes"
_TEXT = "#text"


def value_text(value: Any) -> str:
    """One payload value as text, the way pyevtx-rs renders it in XML."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(value_text(v) for v in value)
    if isinstance(value, dict):  # an element with attributes only, rendered as text
        return value_text(value.get(_TEXT))
    return str(value)


def put_unique(out: dict[str, Any], key: str, value: Any) -> None:
    """Insert without overwriting: a repeated key gets _1, _2, ..."""
    if key not in out:
        out[key] = value
        return
    n = 1
    while f"{key}_{n}" in out:
        n += 1
    out[f"{key}_{n}"] = value


def _attributes(element: dict[str, Any]) -> dict[str, Any]:
    """An element's attributes; pyevtx-rs always writes an object, anything else is none."""
    attrs = element.get(_ATTRS)
    return attrs if isinstance(attrs, dict) else {}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _element(out: dict[str, str], path: str, value: Any) -> None:
    """Flatten one element (scalar, or dict of #attributes/#text/children) at ``path``."""
    if not isinstance(value, dict):
        put_unique(out, path, value_text(value))
        return
    children = [(k, v) for k, v in value.items() if k not in (_ATTRS, _TEXT)]
    attrs = _attributes(value)
    if _TEXT in value or not children:
        put_unique(out, path, value_text(value.get(_TEXT)))
    for name, attr in attrs.items():
        if not name.startswith("xmlns"):
            put_unique(out, _join(path, name), value_text(attr))
    for name, child in children:
        _element(out, _join(path, name), child)


def _event_data(out: dict[str, str], section: dict[str, Any]) -> None:
    unnamed = 0
    for key, value in section.items():
        kind = type(value)
        if kind is str and key not in out:  # the common case, kept fast
            out[key] = value
            continue
        if kind is int and key not in out:
            out[key] = str(value)
            continue
        if key == _ATTRS:
            continue
        if key == "Data" and isinstance(value, dict) and _TEXT in value:
            attrs = _attributes(value)
            if "Name" not in attrs:
                texts = value[_TEXT]
                for text in texts if isinstance(texts, list) else [texts]:
                    put_unique(out, f"Data_{unnamed}", value_text(text))
                    unnamed += 1
                continue
        if isinstance(value, dict):
            attrs = _attributes(value)
            name = attrs.get("Name")
            if isinstance(name, str) and name:
                rest = {k: v for k, v in value.items() if k != _ATTRS}
                other = {k: v for k, v in attrs.items() if k != "Name"}
                if other:
                    rest[_ATTRS] = other
                _element(out, name, rest or None)
                continue
        _element(out, key, value)


def _user_data(out: dict[str, str], section: dict[str, Any]) -> None:
    for key, wrapper in section.items():
        if key == _ATTRS:
            continue
        if isinstance(wrapper, dict):
            for name, child in wrapper.items():
                if name == _ATTRS:
                    continue
                if name == _TEXT:
                    put_unique(out, key, value_text(child))
                else:
                    _element(out, name, child)
        else:
            put_unique(out, key, value_text(wrapper))


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        put_unique(out, key, value)
    return out


def _key_count(value: Any) -> int:
    if isinstance(value, dict):
        return sum(1 + _key_count(v) for v in value.values())
    if isinstance(value, list):
        return sum(_key_count(v) for v in value)
    return 0


def decode_section(raw: bytes | memoryview) -> Any:
    """One payload section of pyevtx-rs JSON, keeping repeated keys.

    pyevtx-rs writes two ``<Data Name="LogonGuid">`` as the same JSON key twice;
    a plain decode would keep only the last. When the text holds more ``":``
    than the decoded object has keys (a cheap upper bound on the key count),
    the section is decoded again pair by pair and repeats get ``_1``, ``_2``.
    """
    value = _DECODER.decode(raw)
    if not isinstance(value, dict):
        return value
    text = bytes(raw)
    marks = text.count(b'":')
    if marks > len(value) and marks > _key_count(value):
        value = json.loads(text, object_pairs_hook=_pairs)
    return value


def flatten_sections(sections: list[tuple[str, Any]]) -> dict[str, str]:
    """The flat payload of one record from its (section name, JSON value) pairs."""
    out: dict[str, str] = {}
    for name, section in sections:
        if section is None:
            continue
        if not isinstance(section, dict):
            put_unique(out, name, value_text(section))
        elif name == "UserData":
            _user_data(out, section)
        else:
            _event_data(out, section)
    return out


def payload_json(sections: list[tuple[str, Any]]) -> str:
    """The ``data`` column's text: the flat payload as a JSON object, keys in document order."""
    return _ENCODER.encode(flatten_sections(sections)).decode()
