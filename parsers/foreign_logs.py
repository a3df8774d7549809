"""Event logs in forms lmtrace does not read, told by their first bytes.

Problem: asked for their event logs, customers often send what Event Viewer or
PowerShell offered them first: an XML, CSV or text export, or, from old servers, a
legacy .evt file. lmtrace reads .evtx only, and "not a recognized log" leaves the
support engineer to find out why the bundle shows nothing. Naming the form says what
to ask for instead.

How: :func:`foreign_log` looks at a file's first bytes for the marks of each form
(the event schema's namespace in XML, Event Viewer's and Export-Csv's header lines,
the legacy log's ``LfLe`` signature) and returns what the file is, or None.
"""

from __future__ import annotations

_EVENT_NAMESPACE = "schemas.microsoft.com/win/2004/08/events/event"
_ASK = (
    "lmtrace reads .evtx files; export the log as .evtx "
    "(wevtutil epl System System.evtx, or Event Viewer's Save All Events As, type .evtx)"
)


def _text(head: bytes) -> str:
    """The first bytes as text: UTF-16 where a byte-order mark says so, else UTF-8."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", "ignore")
    return head.decode("utf-8", "ignore").lstrip("\ufeff")


def foreign_log(head: bytes) -> str | None:
    """What kind of event log, unread by lmtrace, ``head`` starts; None if none."""
    if head[4:8] == b"LfLe":
        return (
            "a legacy .evt event log (Windows Server 2003 and older), not EVTX; the "
            "migrations lmtrace looks for are logged in .evtx only"
        )
    text = _text(head)
    first = text.lstrip().split("\n", 1)[0]
    if _EVENT_NAMESPACE in text and "<Event" in text:
        form = "an event log exported as XML"
    elif first.startswith("#TYPE System.Diagnostics.Eventing.Reader.EventLogRecord"):
        form = "events exported by PowerShell's Export-Csv"
    elif "Event ID" in first and ("Date and Time" in first or "Source" in first):
        form = "an event list exported as CSV or text"
    else:
        return None
    return f"{form}, not EVTX: {_ASK}"
