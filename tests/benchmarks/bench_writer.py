"""Writer throughput on realistic Security-log traffic (not collected by pytest).

The simulator writes bundles of hundreds of megabytes, so the writer has to
keep up with ~9 MB/s on one core (1 GB in under two minutes). This writes
Windows Filtering Platform events shaped like Security 5156 (connection
permitted) and 5152 (packet dropped), with rotating addresses, ports and
processes, and prints the median MB/s and records/s over several runs.

    python tests/benchmarks/bench_writer.py --mb 200 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from parsers.evtx_writer import EventSpec, WriteStats, write_evtx

SECURITY_GUID = "{54849625-5478-4994-a5ba-3e3b0328c30d}"
_APPS = (
    r"\device\harddiskvolume2\windows\system32\svchost.exe",
    r"\device\harddiskvolume2\windows\system32\vmms.exe",
    r"\device\harddiskvolume2\program files\contoso\agent.exe",
    "System",
)


def security_events(count: int) -> Iterator[EventSpec]:
    """``count`` 5156/5152 events, one every 10 ms, varied like a busy Hyper-V host."""
    start = datetime(2024, 3, 5, 8, 0, tzinfo=timezone.utc)
    for i in range(count):
        blocked = i % 7 == 0
        yield EventSpec(
            timestamp=start + timedelta(milliseconds=10 * i),
            provider="Microsoft-Windows-Security-Auditing",
            provider_guid=SECURITY_GUID,
            event_id=5152 if blocked else 5156,
            channel="Security",
            computer="HV-NODE-07.corp.contoso.com",
            task=12809,
            keywords=0x8010000000000000 if blocked else 0x8020000000000000,
            process_id=4,
            thread_id=3000 + i % 97,
            event_data=(
                ("ProcessID", 1000 + i % 53),
                ("Application", _APPS[i % len(_APPS)]),
                ("Direction", "%%14592" if i % 2 else "%%14593"),
                ("SourceAddress", f"10.{i % 4}.{(i >> 2) % 256}.{i % 250 + 1}"),
                ("SourcePort", str(49152 + i % 16000)),
                ("DestAddress", f"172.16.{(i >> 8) % 256}.{i % 200 + 2}"),
                ("DestPort", str((443, 3389, 6600, 445, 53)[i % 5])),
                ("Protocol", 6 if i % 3 else 17),
                ("FilterRTID", 70000 + i % 300),
                ("LayerName", "%%14611" if i % 2 else "%%14610"),
                ("LayerRTID", 48 if i % 2 else 44),
                ("RemoteUserID", "S-1-0-0"),
                ("RemoteMachineID", "S-1-0-0"),
            ),
        )


def run(mb: int, folder: Path) -> tuple[float, float, WriteStats]:
    """Write about ``mb`` MB; returns wall seconds, CPU seconds and what was written.

    CPU time is reported too because the machine is shared: on a busy host the
    wall clock measures the neighbours, CPU time measures the writer.
    """
    count = mb * 1_000_000 // 580  # ~580 bytes per record, as Windows sizes them
    wall, cpu = time.perf_counter(), time.process_time()
    stats = write_evtx(folder / "Security.evtx", security_events(count))
    return time.perf_counter() - wall, time.process_time() - cpu, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="approximate output size in MB")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is reported")
    args = parser.parse_args()
    walls: list[float] = []
    cpus: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            wall, cpu, stats = run(args.mb, Path(tmp))
            walls.append(wall)
            cpus.append(cpu)
            print(
                f"run {i + 1}: {stats.bytes / 1e6:.1f} MB, {stats.records} records, "
                f"{stats.chunks} chunks in {wall:.2f} s wall, {cpu:.2f} s CPU"
            )
    for label, seconds in (("wall", statistics.median(walls)), ("CPU", statistics.median(cpus))):
        print(
            f"median ({label}): {stats.bytes / seconds / 1e6:.2f} MB/s, "
            f"{stats.records / seconds:,.0f} records/s"
        )


if __name__ == "__main__":
    main()
