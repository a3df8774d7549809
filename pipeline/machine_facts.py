"""What each machine's own System log says about it: OS and build, time zone, boots,
names, updates and clock changes.

A support engineer's first questions are which OS a guest runs, whether a host is
patched, which time zone a log is in and whether two names are one machine. Every
Windows System log answers them (domain facts and samples in catalog.toml, section
"machine facts"):

* EventLog 6013 (daily and at boot): the zone as ``<standard bias> <standard name>``
  and, in its Binary, UTF-16 strings with the product (``Windows Server 2016
  Standard Evaluation``), version and build (``10.0.14393 Build 14393``) and build lab;
* Kernel-General 12 and EventLog 6009/6005 at every boot (12 with the revision);
* EventLog 6011 for renames, WindowsUpdateClient 19/20 (43/44 while no result follows)
  for updates;
* Kernel-General 1 for clock changes (old and new time, reason, process).

The facts come from tagged rows (kinds ``system.*``, ``update.*``, ``clock.changed``)
with polars; only the few distinct 6013 Binary strings are decoded in Python.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import resources

import polars as pl

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

UPTIME, OS_VERSION, STARTED, BOOT = (
    "system.uptime",
    "system.os_version",
    "system.started",
    "system.boot",
)
RENAMED, INSTALLED, FAILED, CLOCK = (
    "system.renamed",
    "update.installed",
    "update.failed",
    "clock.changed",
)
STARTED_INSTALL, DOWNLOADING = "update.started", "update.downloading"
UPDATE_STATUS = {
    INSTALLED: "installed",
    FAILED: "failed",
    STARTED_INSTALL: "started",
    DOWNLOADING: "downloading",
}
BOOT_KINDS = (OS_VERSION, STARTED, BOOT)

_VERSION = re.compile(r"^(\d+\.\d+\.\d+) Build (\d+)")
_BUILD_LAB = re.compile(r"^\d+\.\w+\.\d{6}-\d{4}$")
_KB = r"\b(KB\d{6,8})\b"
# Windows' own updates (any UI language names "Windows"); not antivirus signatures,
# the malicious software removal tool, .NET or Store apps: they cannot change the network path.
_OS_UPDATE = r"(?i)\bwindows\b"
_NOT_OS_UPDATE = (
    r"(?i)defender|malicious software|security intelligence|security platform|\.net|silverlight"
)

FACT_COLUMNS: dict[str, pl.DataType] = {
    "machine": pl.String(),
    "os_product": pl.String(),
    "os_version": pl.String(),  # major.minor.build, e.g. 10.0.14393
    "os_build": pl.Int64(),
    "os_revision": pl.Int64(),  # QFE of the last boot (Kernel-General 12), when logged
    "os_build_lab": pl.String(),
    "time_zone": pl.String(),  # the standard name 6013 logs (localized)
    "zone_bias_min": pl.Int64(),  # UTC = local + bias (the standard bias)
    "zone_iana": pl.String(),  # null when the name is not a known Windows zone
    "zones_logged": pl.List(pl.String()),  # every zone 6013 logged, oldest first
    "last_boot": pl.Datetime("us", "UTC"),
    "boots": pl.UInt32(),
    "renames": pl.List(
        pl.Struct({"timestamp": pl.Datetime("us", "UTC"), "old": pl.String(), "new": pl.String()})
    ),
    "updates": pl.List(
        pl.Struct(
            {
                "timestamp": pl.Datetime("us", "UTC"),
                "kb": pl.String(),
                "title": pl.String(),
                "status": pl.String(),  # installed, failed, started or downloading
                "error": pl.String(),
            }
        )
    ),
    "clock_changes": pl.UInt32(),
}

CLOCK_COLUMNS = (
    "machine",
    "computer",
    "timestamp",
    "old_time",
    "new_time",
    "delta_s",
    "delta_ms_logged",
    "reason",
    "process",
    "source_path",
    "member",
    "record_id",
)


def windows_zones() -> dict[str, str]:
    """Windows time zone standard name -> IANA zone (``windows_zones.toml``, from CLDR)."""
    text = resources.files("pipeline").joinpath("windows_zones.toml").read_text("utf-8")
    return dict(tomllib.loads(text)["zones"])


def _strings(hex_text: str) -> list[str]:
    """The NUL-separated UTF-16LE strings of a 6013 Binary (hex as the reader renders it)."""
    try:
        raw = bytes.fromhex(hex_text)
    except ValueError:
        return []
    return [s.strip() for s in raw.decode("utf-16-le", "replace").split("\x00") if s.strip()]


def _os_strings(binaries: pl.Series) -> pl.DataFrame:
    """Product, version, build and build lab from each distinct 6013 Binary.

    A machine logs the same Binary for months, so the distinct values are few and
    each is decoded once. The strings are found by their shape, not their position.
    """
    rows = []
    for hex_text in binaries.drop_nulls().unique().to_list():
        strings = _strings(hex_text)
        version = next((m for s in strings if (m := _VERSION.match(s))), None)
        rows.append(
            {
                "os_strings": hex_text,
                "os_product": next((s for s in strings if s.startswith("Windows")), None),
                "os_version": version.group(1) if version else None,
                "os_build": int(version.group(2)) if version else None,
                "os_build_lab": next((s for s in strings if _BUILD_LAB.match(s)), None),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "os_strings": pl.String,
            "os_product": pl.String,
            "os_version": pl.String,
            "os_build": pl.Int64,
            "os_build_lab": pl.String,
        },
    )


def _latest(frame: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """Per machine, the values of ``columns`` from its most recent row."""
    return frame.sort("timestamp").group_by("machine").agg(pl.col(*columns).last())


def _os(tagged: pl.DataFrame) -> pl.DataFrame:
    """Product, version, build, revision and build lab: 6013 first, then the boot events."""
    uptime = tagged.filter(pl.col("kind") == UPTIME).select("machine", "timestamp", "os_strings")
    from_6013 = _latest(
        uptime.join(_os_strings(uptime["os_strings"]), on="os_strings", how="left").filter(
            pl.col("os_version").is_not_null()
        ),
        "os_product",
        "os_version",
        "os_build",
        "os_build_lab",
    )
    kernel = _latest(
        tagged.filter(pl.col("kind") == BOOT).with_columns(
            pl.format("{}.{}.{}", "os_major", "os_minor", "os_build").alias("_kver"),
            pl.col("os_build").cast(pl.Int64, strict=False).alias("_kbuild"),
            pl.col("os_revision").cast(pl.Int64, strict=False),
        ),
        "_kver",
        "_kbuild",
        "os_revision",
    )
    # 6009 writes the version as "10.00." and the build apart: 10.00. + 14393 -> 10.0.14393.
    eventlog = _latest(
        tagged.filter(pl.col("kind") == OS_VERSION).with_columns(
            pl.format(
                "{}.{}.{}",
                pl.col("os_version").str.extract(r"^(\d+)").cast(pl.Int64, strict=False),
                pl.col("os_version").str.extract(r"^\d+\.(\d+)").cast(pl.Int64, strict=False),
                "os_build",
            ).alias("_ever"),
            pl.col("os_build").cast(pl.Int64, strict=False).alias("_ebuild"),
        ),
        "_ever",
        "_ebuild",
    )
    machines = tagged.select("machine").unique()
    return (
        machines.join(from_6013, on="machine", how="left")
        .join(kernel, on="machine", how="left")
        .join(eventlog, on="machine", how="left")
        .select(
            "machine",
            "os_product",
            pl.coalesce("os_version", "_kver", "_ever").alias("os_version"),
            pl.coalesce("os_build", "_kbuild", "_ebuild").alias("os_build"),
            "os_revision",
            "os_build_lab",
        )
    )


def _zones(tagged: pl.DataFrame, zones: dict[str, str]) -> pl.DataFrame:
    """The zone each machine logged last (6013), its bias and IANA name, and all it logged."""
    logged = (
        tagged.filter((pl.col("kind") == UPTIME) & pl.col("zone").is_not_null())
        .with_columns(
            pl.col("zone").str.extract(r"^\s*(-?\d+)\s").cast(pl.Int64).alias("zone_bias_min"),
            pl.col("zone").str.replace(r"^\s*-?\d+\s+", "").str.strip_chars().alias("time_zone"),
        )
        .sort("timestamp")
    )
    return (
        logged.group_by("machine")
        .agg(
            pl.col("time_zone").last(),
            pl.col("zone_bias_min").last(),
            pl.col("zone").unique(maintain_order=True).alias("zones_logged"),
        )
        .with_columns(
            pl.col("time_zone")
            .replace_strict(zones, default=None, return_dtype=pl.String)
            .alias("zone_iana")
        )
    )


def _boots(tagged: pl.DataFrame) -> pl.DataFrame:
    """Last boot and the number of boots: 6005, 6009 and Kernel-General 12 mark one boot
    together, so boots are counted as groups of such events less than 2 minutes apart."""
    boots = tagged.filter(pl.col("kind").is_in(BOOT_KINDS)).select("machine", "timestamp")
    return (
        boots.sort("machine", "timestamp")
        .with_columns(
            (pl.col("timestamp").diff().over("machine") > pl.duration(minutes=2))
            .fill_null(True)
            .alias("_new")
        )
        .group_by("machine")
        .agg(pl.col("timestamp").max().alias("last_boot"), pl.col("_new").sum().alias("boots"))
    )


def renames(tagged: pl.DataFrame) -> pl.DataFrame:
    """Every 6011 with a real old name: ``machine``, ``timestamp``, ``old``, ``new``."""
    return (
        tagged.filter((pl.col("kind") == RENAMED) & (pl.col("old_name").str.strip_chars() != ""))
        .select(
            "machine", "timestamp", pl.col("old_name").alias("old"), pl.col("new_name").alias("new")
        )
        .unique(["machine", "timestamp", "old", "new"])
        .sort("timestamp")
    )


def updates(tagged: pl.DataFrame) -> pl.DataFrame:
    """Windows' own updates installed (19) or failed (20), with the KB their title names,
    and those whose install (43) or download (44) started with no result logged after it.

    Only titles that name Windows and a KB count: Store apps, antivirus signatures and the
    like cannot change how a guest's network behaves after a migration. A download or a
    started install is never an install: a host whose log ends there is not patched.
    """
    logged = (
        tagged.filter(pl.col("kind").is_in(list(UPDATE_STATUS)))
        .filter(
            pl.col("update_title").str.contains(_OS_UPDATE)
            & ~pl.col("update_title").str.contains(_NOT_OS_UPDATE)
        )
        .with_columns(pl.col("update_title").str.extract(_KB).alias("kb"))
        .filter(pl.col("kb").is_not_null())  # Store apps name no KB
        .select(
            "machine",
            "timestamp",
            "kb",
            pl.col("update_title").alias("title"),
            pl.col("kind").replace_strict(UPDATE_STATUS).alias("status"),
            "error",
        )
    )
    result = pl.col("status").is_in(["installed", "failed"])
    done = (
        logged.filter(result)
        .group_by("machine", "title")
        .agg(pl.col("timestamp").max().alias("_done"))
    )
    pending = (
        logged.filter(~result)
        .join(done, on=["machine", "title"], how="left")
        .filter(pl.col("_done").is_null() | (pl.col("_done") < pl.col("timestamp")))
        .sort("timestamp")
        .unique(["machine", "title"], keep="last")  # its last step: started after downloading
        .drop("_done")
    )
    return pl.concat([logged.filter(result), pending]).sort("machine", "timestamp")


def clock_changes(tagged: pl.DataFrame) -> pl.DataFrame:
    """Kernel-General 1: when, from which time to which, by how much, why and by whom.

    ``delta_s`` is measured as new - old time (every version logs both);
    ``delta_ms_logged`` is what newer builds log themselves (``TimeDeltaInMs``).
    """
    when = pl.col("old_time", "new_time").str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC", strict=False
    )
    return (
        tagged.filter(pl.col("kind") == CLOCK)
        .with_columns(when)
        .with_columns(
            ((pl.col("new_time") - pl.col("old_time")).dt.total_microseconds() / 1e6).alias(
                "delta_s"
            ),
            pl.col("delta_ms").cast(pl.Int64, strict=False).alias("delta_ms_logged"),
            pl.col("reason").cast(pl.Int64, strict=False),
        )
        .select(CLOCK_COLUMNS)
        .sort("machine", "timestamp")
    )


@dataclass(frozen=True)
class MachineFacts:
    """One row per machine (``FACT_COLUMNS``), and the clock changes, renames, updates and
    boots (``machine``, ``timestamp``, ``os_build``, ``os_revision`` where logged)."""

    facts: pl.DataFrame
    clock_changes: pl.DataFrame
    renames: pl.DataFrame
    updates: pl.DataFrame
    boots: pl.DataFrame


def extract(tagged: pl.DataFrame) -> MachineFacts:
    """Every machine fact of the bundle from tagged rows that carry a ``machine`` column."""
    mine = tagged.filter(
        pl.col("kind").is_in([UPTIME, *BOOT_KINDS, RENAMED, *UPDATE_STATUS, CLOCK])
    )
    changes = clock_changes(mine)
    named = renames(mine)
    done = updates(mine)
    struct = lambda frame, cols, name: frame.group_by("machine").agg(  # noqa: E731
        pl.struct(cols).sort_by("timestamp").alias(name)
    )
    facts = (
        _os(mine)
        .join(_zones(mine, windows_zones()), on="machine", how="left")
        .join(_boots(mine), on="machine", how="left")
        .join(struct(named, ["timestamp", "old", "new"], "renames"), on="machine", how="left")
        .join(
            struct(done, ["timestamp", "kb", "title", "status", "error"], "updates"),
            on="machine",
            how="left",
        )
        .join(
            changes.group_by("machine").agg(pl.len().alias("clock_changes")),
            on="machine",
            how="left",
        )
    )
    facts = pl.DataFrame(schema=FACT_COLUMNS).vstack(
        facts.select([pl.col(c).cast(t) for c, t in FACT_COLUMNS.items()])
    )
    boots = (
        mine.filter(pl.col("kind").is_in(BOOT_KINDS))
        .select(
            "machine",
            "timestamp",
            pl.col("os_build").cast(pl.Int64, strict=False),
            pl.col("os_revision").cast(pl.Int64, strict=False),
        )
        .sort("machine", "timestamp")
    )
    return MachineFacts(facts.sort("machine"), changes, named, done, boots)
