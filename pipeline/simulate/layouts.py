"""Every event the simulator writes, as one table of layouts.

The problem: a simulated bundle is only worth testing with if its events look
like Windows' own, down to the payload field names, their order and their
binary XML value types, because the reader, the catalog and the correlator all
key on those. So each layout is written down once, here, with where it comes
from: ``seen`` (measured from a real public sample, see
tests/test_simulate.py which checks it against the corpus), ``stated`` (a
public document names the fields) or ``inferred`` (no public sample; the
closest public evidence, recorded in docs/simulate.md and
docs/domain.md). A user with real host logs corrects a field name
here, in one place.

Values are passed positionally, in the layout's field order, so that building
millions of padding events stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from parsers.binxml import Typed, ValueType
from parsers.evtx_templates import BINARY_ELEMENT
from parsers.evtx_writer import EventSpec, PayloadValue, UserDataSpec

Source = Literal["seen", "stated", "inferred"]

VML_NAMESPACE = "http://www.microsoft.com/Windows/Virtualization/Events"

_SECURITY = ("Microsoft-Windows-Security-Auditing", "{54849625-5478-4994-a5ba-3e3b0328c30d}")
_NETVSC = ("Microsoft-Windows-Hyper-V-Netvsc", "{152fbe4b-c7ad-4f68-bada-a4fcc1464f6c}")
_VMMS = ("Microsoft-Windows-Hyper-V-VMMS", "{6066f867-7ca1-4418-85fd-36e3f9c0600c}")
_HA = ("Microsoft-Windows-Hyper-V-High-Availability", None)  # GUID not public
_WORKER = ("Microsoft-Windows-Hyper-V-Worker", "{51ddfa29-d5c8-4803-be4b-2ecb715570fe}")
_CLUSTER = ("Microsoft-Windows-FailoverClustering", "{baf908ea-3421-4ca9-9b84-6689b8c6f85f}")
_PROFILE = ("Microsoft-Windows-NetworkProfile", "{fbcfac3f-8459-419f-8e48-1f0b49cdb85e}")
_NCSI = ("Microsoft-Windows-NCSI", "{314de49f-ce63-4779-ba2b-d616f6963a88}")
_FIREWALL = (
    "Microsoft-Windows-Windows Firewall With Advanced Security",
    "{d1bc9aff-2abf-4d71-9146-ecb2a986eb85}",
)
_SCM = ("Service Control Manager", "{555908d1-a6d7-4695-8e1e-26931d2012f4}")
_KERNEL_GENERAL = ("Microsoft-Windows-Kernel-General", "{a68ca8b7-004f-d7b6-a698-07e2de0f1f5d}")
_EVENTLOG = ("EventLog", None)  # a classic provider: no GUID in the samples
_WUC = ("Microsoft-Windows-WindowsUpdateClient", "{945a8954-c147-4acd-923f-40c45405a658}")

VMMS_ADMIN = "Microsoft-Windows-Hyper-V-VMMS-Admin"
HA_ADMIN = "Microsoft-Windows-Hyper-V-High-Availability-Admin"
WORKER_ADMIN = "Microsoft-Windows-Hyper-V-Worker-Admin"
PROFILE_OPERATIONAL = "Microsoft-Windows-NetworkProfile/Operational"
NCSI_OPERATIONAL = "Microsoft-Windows-NCSI/Operational"
FIREWALL_CHANNEL = "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall"

AUDIT_SUCCESS = 0x8020000000000000
AUDIT_FAILURE = 0x8010000000000000

S, U16, U32, U64 = (
    ValueType.STRING,
    ValueType.UINT16,
    ValueType.UINT32,
    ValueType.UINT64,
)
GUID, SID, HEX64, BOOL, BINARY, FILETIME = (
    ValueType.GUID,
    ValueType.SID,
    ValueType.HEXINT64,
    ValueType.BOOL,
    ValueType.BINARY,
    ValueType.FILETIME,
)
_UNNAMED = ""  # an unnamed <Data>, as classic providers log


@dataclass(frozen=True)
class Layout:
    """One event's System values and payload shape (names and value types, in order)."""

    provider: tuple[str, str | None]  # name, "{guid}" or None
    event_id: int
    channel: str
    fields: tuple[tuple[str, ValueType], ...]
    source: Source
    level: int = 4
    task: int = 0
    opcode: int = 0
    keywords: int = 0x8000000000000000
    version: int = 0
    qualifiers: int | None = None
    user_data: str | None = None  # UserData wrapper element; None: EventData

    def payload(self, values: Sequence[object]) -> tuple[tuple[str, PayloadValue], ...]:
        """``values`` (in field order) named and typed as the layout says."""
        if len(values) != len(self.fields):
            raise ValueError(f"event {self.event_id}: {len(values)} values for {len(self.fields)}")
        return tuple(
            (name, Typed(vtype, v)) for (name, vtype), v in zip(self.fields, values, strict=True)
        )

    def build(
        self,
        when: datetime,
        computer: str,
        payload: tuple[tuple[str, PayloadValue], ...],
        *,
        pid: int = 4,
        tid: int = 8,
        sid: str | None = None,
    ) -> EventSpec:
        """The event at ``when`` with a payload made by :meth:`payload` (reusable)."""
        user_data = None
        event_data: tuple[tuple[str, PayloadValue], ...] | None = payload
        if self.user_data is not None:
            user_data = UserDataSpec(self.user_data, VML_NAMESPACE, payload)
            event_data = None
        return EventSpec(
            timestamp=when,
            provider=self.provider[0],
            provider_guid=self.provider[1],
            event_id=self.event_id,
            channel=self.channel,
            computer=computer,
            level=self.level,
            task=self.task,
            opcode=self.opcode,
            keywords=self.keywords,
            version=self.version,
            qualifiers=self.qualifiers,
            process_id=pid,
            thread_id=tid,
            user_sid=sid,
            event_data=event_data,
            user_data=user_data,
        )

    def event(
        self,
        when: datetime,
        computer: str,
        values: Sequence[object],
        *,
        pid: int = 4,
        tid: int = 8,
        sid: str | None = None,
    ) -> EventSpec:
        """The event at ``when`` with ``values`` in field order."""
        return self.build(when, computer, self.payload(values), pid=pid, tid=tid, sid=sid)


_MINIPORT = (("MiniportNameLen", U32), ("MiniportName", S))
_WFP_HEAD = (
    ("Application", S),
    ("Direction", S),
    ("SourceAddress", S),
    ("SourcePort", S),
    ("DestAddress", S),
    ("DestPort", S),
    ("Protocol", U32),
)
_WFP_TAIL = (("FilterRTID", U64), ("LayerName", S), ("LayerRTID", U64))
_WFP_2022 = (("FilterOrigin", S), ("InterfaceIndex", U32))
_WFP_REMOTE = (("RemoteUserID", SID), ("RemoteMachineID", SID))
_VML_PARAMS = (("Parameter0", S), ("Parameter1", S), ("Parameter2", S))
_HA_VM = (("VmId", S), ("VmName", S))
_SUBJECT = (
    ("SubjectUserSid", SID),
    ("SubjectUserName", S),
    ("SubjectDomainName", S),
    ("SubjectLogonId", HEX64),
)
_TARGET = (
    ("TargetUserSid", SID),
    ("TargetUserName", S),
    ("TargetDomainName", S),
    ("TargetLogonId", HEX64),
)
_PROFILE_FIELDS = (
    ("Name", S),
    ("Description", S),
    ("Guid", GUID),
    ("Type", U32),
    ("State", U32),
    ("Category", U32),
)


def _netvsc(event_id: int) -> Layout:
    # Real sample: task 1003 (RndisStatusChange) for 10-13; 14 shares the task.
    return Layout(_NETVSC, event_id, "System", _MINIPORT, "seen", task=1003)


LAYOUTS: dict[str, Layout] = {
    # --- host: VMMS-Admin (UserData VmlEventLog) ------------------------------------------
    "vmms.migration_started": Layout(
        _VMMS, 20413, VMMS_ADMIN, _VML_PARAMS, "inferred", user_data="VmlEventLog"
    ),
    "vmms.migration_completed": Layout(
        _VMMS, 20415, VMMS_ADMIN, _VML_PARAMS, "seen", user_data="VmlEventLog"
    ),
    "vmms.migration_completed_long_blackout": Layout(
        _VMMS, 20417, VMMS_ADMIN, _VML_PARAMS, "stated", level=3, user_data="VmlEventLog"
    ),
    "vmms.migration_succeeded": Layout(
        _VMMS,
        20418,
        VMMS_ADMIN,
        (("Parameter0", S), ("Parameter1", S)),
        "inferred",
        user_data="VmlEventLog",
    ),
    "vmms.migration_failed": Layout(
        _VMMS,
        21024,
        VMMS_ADMIN,
        (("VmName", S), ("VmId", S), ("ErrorMessage", S), ("ErrorCode", ValueType.HEXINT32)),
        "inferred",
        level=2,
        user_data="VmlEventLog",
    ),
    # --- host: High-Availability-Admin (clustered LM; positional %1 = VMID) ----------------
    "ha.source_started": Layout(_HA, 21300, HA_ADMIN, _HA_VM, "inferred"),
    "ha.source_completed": Layout(_HA, 21301, HA_ADMIN, (*_HA_VM, ("Seconds", S)), "inferred"),
    "ha.target_started": Layout(_HA, 21306, HA_ADMIN, _HA_VM, "inferred"),
    "ha.target_completed": Layout(_HA, 21307, HA_ADMIN, (*_HA_VM, ("Seconds", S)), "inferred"),
    "ha.migration_failed": Layout(_HA, 21111, HA_ADMIN, _HA_VM, "stated", level=2),
    # --- host: Worker-Admin on the destination ---------------------------------------------
    "worker.migration_summary": Layout(
        _WORKER,
        22507,
        WORKER_ADMIN,
        (("VmName", S), ("VmId", S), ("BrownoutSeconds", S), ("BlackoutSeconds", S)),
        "inferred",
        user_data="VmlEventLog",
    ),
    "worker.brownout": Layout(
        _WORKER,
        22508,
        WORKER_ADMIN,
        (("VmName", S), ("VmId", S), ("BrownoutSeconds", S)),
        "inferred",
        user_data="VmlEventLog",
    ),
    "worker.blackout": Layout(
        _WORKER,
        22509,
        WORKER_ADMIN,
        (("VmName", S), ("VmId", S), ("BlackoutSeconds", S), ("DirtyPages", U64)),
        "inferred",
        user_data="VmlEventLog",
    ),
    # --- host: FailoverClustering in System ------------------------------------------------
    "cluster.role_moving": Layout(
        _CLUSTER,
        1153,
        "System",
        (("ResourceGroup", S), ("SourceNode", S), ("TargetNode", S)),
        "inferred",
    ),
    "cluster.role_online": Layout(_CLUSTER, 1201, "System", (("ResourceGroup", S),), "inferred"),
    # --- guest: Hyper-V-Netvsc in System ---------------------------------------------------
    "netvsc.paused": _netvsc(10),
    "netvsc.restarted": _netvsc(11),
    "netvsc.connected": _netvsc(12),
    "netvsc.disconnected": _netvsc(13),
    "netvsc.network_changed": _netvsc(14),
    # --- guest: Security, WFP (Windows Server 2012 R2 / 2016 layouts) ----------------------
    "wfp.packet_dropped": Layout(
        _SECURITY,
        5152,
        "Security",
        (("ProcessId", U64), *_WFP_HEAD, *_WFP_TAIL),
        "seen",
        level=0,
        task=12809,
        keywords=AUDIT_FAILURE,
    ),
    "wfp.connection_blocked": Layout(
        _SECURITY,
        5157,
        "Security",
        (("ProcessID", U64), *_WFP_HEAD, *_WFP_TAIL, *_WFP_REMOTE),
        "seen",
        level=0,
        task=12810,
        keywords=AUDIT_FAILURE,
        version=1,
    ),
    "wfp.connection_allowed": Layout(
        _SECURITY,
        5156,
        "Security",
        (("ProcessID", U64), *_WFP_HEAD, *_WFP_TAIL, *_WFP_REMOTE),
        "seen",
        level=0,
        task=12810,
        keywords=AUDIT_SUCCESS,
        version=1,
    ),
    # --- guest: Security, WFP with FilterOrigin (Windows Server 2022 / Windows 11) ---------
    "wfp2022.packet_dropped": Layout(
        _SECURITY,
        5152,
        "Security",
        (("ProcessId", U64), *_WFP_HEAD, *_WFP_2022, *_WFP_TAIL),
        "stated",
        level=0,
        task=12809,
        keywords=AUDIT_FAILURE,
        version=1,
    ),
    "wfp2022.connection_blocked": Layout(
        _SECURITY,
        5157,
        "Security",
        (("ProcessID", U64), *_WFP_HEAD, *_WFP_2022, *_WFP_TAIL, *_WFP_REMOTE),
        "stated",
        level=0,
        task=12810,
        keywords=AUDIT_FAILURE,
        version=2,
    ),
    "wfp2022.connection_allowed": Layout(
        _SECURITY,
        5156,
        "Security",
        (("ProcessID", U64), *_WFP_HEAD, *_WFP_2022, *_WFP_TAIL, *_WFP_REMOTE),
        "stated",
        level=0,
        task=12810,
        keywords=AUDIT_SUCCESS,
        version=2,
    ),
    "security.profile_changed": Layout(
        _SECURITY,
        4956,
        "Security",
        (("ActiveProfile", S),),
        "stated",
        level=0,
        task=13571,
        keywords=AUDIT_SUCCESS,
    ),
    "security.logon": Layout(
        _SECURITY,
        4624,
        "Security",
        (
            *_SUBJECT,
            *_TARGET,
            ("LogonType", U32),
            ("LogonProcessName", S),
            ("AuthenticationPackageName", S),
            ("WorkstationName", S),
            ("LogonGuid", GUID),
            ("TransmittedServices", S),
            ("LmPackageName", S),
            ("KeyLength", U32),
            ("ProcessId", HEX64),
            ("ProcessName", S),
            ("IpAddress", S),
            ("IpPort", S),
            ("ImpersonationLevel", S),
            ("RestrictedAdminMode", S),
            ("TargetOutboundUserName", S),
            ("TargetOutboundDomainName", S),
            ("VirtualAccount", S),
            ("TargetLinkedLogonId", HEX64),
            ("ElevatedToken", S),
        ),
        "seen",
        level=0,
        task=12544,
        keywords=AUDIT_SUCCESS,
        version=2,
    ),
    "security.special_privileges": Layout(
        _SECURITY,
        4672,
        "Security",
        (*_SUBJECT, ("PrivilegeList", S)),
        "seen",
        level=0,
        task=12548,
        keywords=AUDIT_SUCCESS,
    ),
    "security.logoff": Layout(
        _SECURITY,
        4634,
        "Security",
        (*_TARGET, ("LogonType", U32)),
        "seen",
        level=0,
        task=12545,
        keywords=AUDIT_SUCCESS,
    ),
    # --- guest: network classification (the quarantine's normal end) ---------------------
    "profile.connected": Layout(
        _PROFILE, 10000, PROFILE_OPERATIONAL, _PROFILE_FIELDS, "seen", keywords=0x4000200000000020
    ),
    "profile.disconnected": Layout(
        _PROFILE, 10001, PROFILE_OPERATIONAL, _PROFILE_FIELDS, "seen", keywords=0x4000200000000020
    ),
    # 4001/4002 precede a 10000 by a fraction of a millisecond: CurrentOrNextState 0 before
    # the placeholder network ("Identifying..."), 1 before the identified one (tugix456).
    "profile.identifying": Layout(
        _PROFILE,
        4001,
        PROFILE_OPERATIONAL,
        (("InterfaceGuid", GUID), ("CurrentOrNextState", ValueType.UINT8)),
        "seen",
        task=1,
        opcode=1,
        keywords=0x4000200000000000,
    ),
    "profile.identified": Layout(
        _PROFILE,
        4002,
        PROFILE_OPERATIONAL,
        (("InterfaceGuid", GUID), ("CurrentOrNextState", ValueType.UINT8)),
        "seen",
        task=1,
        opcode=2,
        keywords=0x4001200000000000,
    ),
    "profile.state_change": Layout(
        _PROFILE,
        4004,
        PROFILE_OPERATIONAL,
        (
            ("NewInternetConnectionProfile", BOOL),
            ("ConnectionCostChanged", BOOL),
            ("DomainConnectivityLevelChanged", BOOL),
            ("NetworkConnectivityLevelChanged", BOOL),
            ("HostNameChanged", BOOL),
            ("WwanRegistrationStateChanged", BOOL),
            ("TetheringOperationalStateChanged", BOOL),
            ("TetheringClientCountChanged", BOOL),
        ),
        "seen",
        keywords=0x4000000000000000,
    ),
    "ncsi.capability_change": Layout(
        _NCSI,
        4042,
        NCSI_OPERATIONAL,
        (
            ("InterfaceGuid", GUID),
            ("IfLuid", U64),
            ("Family", U32),
            ("Capability", U32),
            ("CapabilityChangeReason", U32),
            ("PreviousCapability", U32),
        ),
        "seen",
        keywords=0x4000000000000020,
    ),
    "firewall.profile_changed": Layout(
        _FIREWALL,
        2010,
        FIREWALL_CHANNEL,
        (("InterfaceGuid", GUID), ("InterfaceName", S), ("OldProfile", U32), ("NewProfile", U32)),
        "seen",
    ),
    # --- background noise, hosts and guests ------------------------------------------------
    "scm.service_state": Layout(
        _SCM,
        7036,
        "System",
        (("param1", S), ("param2", S), (BINARY_ELEMENT, BINARY)),
        "seen",
        keywords=0x8080000000000000,
        qualifiers=16384,
    ),
    # --- machine facts in System (issue 14): each layout as the named sample shows it -------
    # EventLog 6013 (velociraptor RDPAuth_System and others): seven unnamed Data (uptime
    # seconds at [4], "60" at [5], "<bias> <zone name>" at [6]) and a Binary of UTF-16 strings.
    "eventlog.uptime": Layout(
        _EVENTLOG,
        6013,
        "System",
        (*((_UNNAMED, S),) * 7, (BINARY_ELEMENT, BINARY)),
        "seen",
        keywords=0x80000000000000,
        qualifiers=32768,
    ),
    # EventLog 6009: version "10.00.", build, service pack, "Multiprocessor Free", "0".
    "eventlog.os_version": Layout(
        _EVENTLOG,
        6009,
        "System",
        (*((_UNNAMED, S),) * 5, (BINARY_ELEMENT, ValueType.NULL)),
        "seen",
        keywords=0x80000000000000,
        qualifiers=32768,
    ),
    # EventLog 6011 (plaso, tugix456, ts-evtx): old name, new name.
    "eventlog.renamed": Layout(
        _EVENTLOG,
        6011,
        "System",
        ((_UNNAMED, S), (_UNNAMED, S), (BINARY_ELEMENT, ValueType.NULL)),
        "seen",
        keywords=0x80000000000000,
        qualifiers=32768,
    ),
    # Kernel-General 1 version 2 (tugix456): a clock change with reason and process.
    "kernel.time_changed": Layout(
        _KERNEL_GENERAL,
        1,
        "System",
        (
            ("NewTime", FILETIME),
            ("OldTime", FILETIME),
            ("Reason", U32),
            ("ProcessName", S),
            ("ProcessID", U32),
        ),
        "seen",
        task=1,
        version=2,
        keywords=0x8000000000000010,
    ),
    # WindowsUpdateClient 19 version 1 (ts-evtx, tugix456): an update installed.
    "wuc.installed": Layout(
        _WUC,
        19,
        "System",
        (
            ("updateTitle", S),
            ("updateGuid", GUID),
            ("updateRevisionNumber", U32),
            ("serviceGuid", GUID),
        ),
        "seen",
        task=1,
        version=1,
        keywords=0x8000000000000018,
    ),
    "kernel.hive_flushed": Layout(
        _KERNEL_GENERAL,
        16,
        "System",
        (("HiveNameLength", U16), ("HiveName", S), ("KeysUpdated", U32), ("DirtyPages", U32)),
        "seen",
    ),
}


def layout(name: str) -> Layout:
    """The layout called ``name``; KeyError names the unknown layout."""
    return LAYOUTS[name]


def file_name(channel: str) -> str:
    """The exported file name of a channel: Windows writes ``/`` as ``%4``."""
    return channel.replace("/", "%4") + ".evtx"
