"""A written record only tests readers if its template is shaped as Windows shapes it.

Problem: every EVTX record is an instance of a binary XML template, and the
simulator's files are only worth testing with if every independent reader
decodes them as it decodes Windows' own logs. So the templates are written down
here once, as read off Windows' own Security logs in the public corpus, apart
from the chunk and file layout that parsers/evtx_writer.py owns.

Two kinds: the Event template (one per computer, with or without a payload),
whose System values are optional substitutions in Windows' slot order and whose
Computer is literal text, and one payload template per distinct payload layout
(EventData's named Data elements, or UserData's wrapper element), nested in the
Event template's last slot as a binary XML value. A NULL optional value makes
readers drop the attribute, which is how Windows leaves out Qualifiers, UserID
and the provider GUID. A template's GUID, id and table bucket follow from its
key, so equal inputs give byte-identical files.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from parsers.binxml import Element, Sub, ValueType, template_bucket, template_guid

EVENT_NAMESPACE = "http://schemas.microsoft.com/win/2004/08/events/event"

_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class Template:
    """A template as used in any chunk: its tree, the id and GUID, its table bucket."""

    root: Element
    guid: uuid.UUID
    template_id: int
    bucket: int


def new_template(key: object, root: Element) -> Template:
    """The template with tree ``root``; its GUID, id and bucket derive from ``key``."""
    guid = template_guid(key)
    return Template(root, guid, _U32.unpack(guid.bytes_le[:4])[0], template_bucket(guid))


# The event template's substitution slots, in the order Windows numbers them.
_LEVEL, _OPCODE, _TASK, _EVENT_ID, _QUALIFIERS, _KEYWORDS, _TIME, _ACTIVITY = range(8)
_PID, _TID, _RECORD_ID, _VERSION, _USER, _RELATED, _PROVIDER, _PROVIDER_GUID = range(8, 16)
_CHANNEL, PAYLOAD_SLOT = 16, 17


def _opt(index: int, vtype: ValueType) -> Sub:
    return Sub(index, vtype, optional=True)


def event_root(computer: str, payload: bool) -> Element:
    """The Event template Windows uses: every value optional, Computer literal, payload nested.

    Read off Windows' own Security logs: System values are optional
    substitutions (NULL ones drop their attribute or element), Provider name
    and GUID and Channel are substitutions, Computer is literal text, and
    EventData/UserData arrive as one binary XML value with its own template.
    """
    return Element(
        "Event",
        (("xmlns", EVENT_NAMESPACE),),
        (
            Element(
                "System",
                children=(
                    Element(
                        "Provider",
                        (
                            ("Name", _opt(_PROVIDER, ValueType.STRING)),
                            ("Guid", _opt(_PROVIDER_GUID, ValueType.GUID)),
                        ),
                    ),
                    Element(
                        "EventID",
                        (("Qualifiers", _opt(_QUALIFIERS, ValueType.UINT16)),),
                        (_opt(_EVENT_ID, ValueType.UINT16),),
                    ),
                    Element("Version", children=(_opt(_VERSION, ValueType.UINT8),)),
                    Element("Level", children=(_opt(_LEVEL, ValueType.UINT8),)),
                    Element("Task", children=(_opt(_TASK, ValueType.UINT16),)),
                    Element("Opcode", children=(_opt(_OPCODE, ValueType.UINT8),)),
                    Element("Keywords", children=(_opt(_KEYWORDS, ValueType.HEXINT64),)),
                    Element("TimeCreated", (("SystemTime", _opt(_TIME, ValueType.FILETIME)),)),
                    Element("EventRecordID", children=(_opt(_RECORD_ID, ValueType.UINT64),)),
                    Element(
                        "Correlation",
                        (
                            ("ActivityID", _opt(_ACTIVITY, ValueType.GUID)),
                            ("RelatedActivityID", _opt(_RELATED, ValueType.GUID)),
                        ),
                    ),
                    Element(
                        "Execution",
                        (
                            ("ProcessID", _opt(_PID, ValueType.UINT32)),
                            ("ThreadID", _opt(_TID, ValueType.UINT32)),
                        ),
                    ),
                    Element("Channel", children=(_opt(_CHANNEL, ValueType.STRING),)),
                    Element("Computer", children=(computer,)),
                    Element("Security", (("UserID", _opt(_USER, ValueType.SID)),)),
                ),
            ),
            # libevtx cannot render a NULL payload, so payload-less events leave the slot out.
            *((_opt(PAYLOAD_SLOT, ValueType.BINXML),) if payload else ()),
        ),
    )


BINARY_ELEMENT = "<Binary>"
"""A payload field name that writes a ``<Binary>`` element instead of ``<Data Name=..>``."""


def payload_root(
    names: tuple[str, ...],
    user_data: tuple[str, str | None] | None,
    types: tuple[ValueType, ...],
) -> Element:
    """The payload template: EventData's named Data elements, or UserData's wrapper.

    ``user_data`` is the wrapper's (element, namespace) for a UserData payload
    and None for EventData; ``names`` and ``types`` give one field each. Classic providers
    (EventLog 6013, Service Control Manager 7036) log unnamed ``<Data>`` and a ``<Binary>``
    element: an empty name writes the first, the name ``BINARY_ELEMENT`` the second.
    """
    if user_data is None:
        data = tuple(
            Element("Binary", (), (Sub(i, types[i]),))
            if name == BINARY_ELEMENT
            else Element("Data", (("Name", name),) if name else (), (Sub(i, types[i]),))
            for i, name in enumerate(names)
        )
        return Element("EventData", children=data)
    element, namespace = user_data
    fields = tuple(Element(name, children=(Sub(i, types[i]),)) for i, name in enumerate(names))
    attrs = (("xmlns", namespace),) if namespace is not None else ()
    return Element("UserData", children=(Element(element, attrs, fields),))
