"""Which computer in a bundle is a Hyper-V host and which is a guest, and what each logged.

Bundles arrive as folders named by whoever exported them, so roles come from what a
computer logged (the System/Computer field), not from folder names: a computer that
logged migration or cluster events is a host, every other computer is a candidate
guest. ``--host`` and ``--guest`` override, because a host may run no migrations
in the exported period and a guest may log nothing lmtrace knows.

Coverage (which channels each computer exported, and the time span of each) decides
later whether an absence of evidence means anything: no Netvsc 14 proves nothing
if the guest's System log ends before the migration.

One machine can log under several names: its short and DNS forms, and the names it
had before a rename (EventLog 6011). Every step names a machine by
:func:`machine_of`, so a renamed computer is one machine everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

HOST_KIND_PREFIXES = ("migration.", "cluster.")


def short_name(expr: pl.Expr) -> pl.Expr:
    """Lower-case host name without its DNS domain: ``SQL7.corp.example`` -> ``sql7``.

    The domain is the longest run of ``.label`` at the end whose removal leaves a name:
    ``../../etc/x.corp.contoso.com`` is ``../../etc/x``, and a name with nothing before
    its domain (``.local``) is kept whole, since an empty key would make it a blank
    machine and merge every such computer into one.
    """
    name = expr.str.to_lowercase().str.strip_chars()
    return name.str.replace(r"^(.+?)(?:\.[a-z0-9_-]+)+$", "${1}")


def machine_of(computer: pl.Expr, aliases: Mapping[str, str]) -> pl.Expr:
    """The machine a ``computer`` value belongs to: its short name, or, for a name the
    machine had before a rename, the name it has now (``aliases``, from :func:`aliases`)."""
    name = short_name(computer)
    return name.replace(aliases) if aliases else name


def machine_names(names: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    """:func:`machine_of` for names the user typed (``--clock-offset``, ``--map``): the same
    rule as for logged names, so that ``SQL7.corp.example`` and a name from before a rename
    mean the machine they name in the tables."""
    frame = pl.DataFrame({"name": list(names)}, schema={"name": pl.String})
    return frame.select(machine_of(pl.col("name"), aliases))["name"].to_list()


def given_name_notes(
    given: Mapping[str, tuple[Sequence[str], str]],
    aliases: Mapping[str, str],
    known: Sequence[str],
) -> list[str]:
    """What the reader should know about the machine names the user gave, per option
    (``--clock-offset`` -> (names, what happens to a name the bundle lacks)): one given
    from before a rename was applied to the machine it is now; one that names no machine
    of the bundle is said, with what became of it."""
    notes = []
    for option, (names, if_unknown) in given.items():
        for name, machine in zip(names, machine_names(names, aliases), strict=True):
            if machine not in known:
                notes.append(
                    f"{option} {name}: no computer of that name logged anything in this"
                    f" bundle (the machines table lists every name logged): {if_unknown}"
                )
            elif machine_names([name], {})[0] != machine:
                notes.append(
                    f"{option} {name}: that computer was renamed (EventLog 6011) and is"
                    f" {machine} now; applied to {machine}"
                )
    return notes


def aliases(renamed: pl.DataFrame) -> dict[str, str]:
    """Every earlier short name of a renamed computer -> the short name it has now.

    ``renamed`` holds EventLog 6011 rows (``timestamp``, ``old_name``, ``new_name``).
    Renames chain (A -> B, later B -> C: A and B are C now). An old name renamed to
    two different names belongs to two machines (clones of one template), so it
    joins neither: merging them would mix two guests' events. An empty old name
    (first setup) is not a name. Renames back (A -> B -> A) end at the latest name.
    """
    rows = (
        renamed.select(
            "timestamp",
            short_name(pl.col("old_name")).alias("old"),
            short_name(pl.col("new_name")).alias("new"),
        )
        .filter((pl.col("old") != "") & (pl.col("new") != "") & (pl.col("old") != pl.col("new")))
        .unique(["old", "new"], keep="last")
        .sort("timestamp")
    )
    if rows.is_empty():
        return {}
    ambiguous = set(
        rows.group_by("old")
        .agg(pl.col("new").n_unique())
        .filter(pl.col("new") > 1)["old"]
        .to_list()
    )
    # Union-find over a handful of names: one 6011 per rename, so this never grows large.
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.get(name, name) != name:
            name = parent[name]
        return name

    latest: dict[str, str] = {}  # root -> the newest name seen in its group
    for old, new in rows.select("old", "new").iter_rows():
        if old in ambiguous:
            continue
        a, b = root(old), root(new)
        parent[a] = b
        parent.setdefault(b, b)
        if a != b:
            latest.pop(a, None)
        latest[b] = new  # rows are in time order: the last rename names the group
    return {
        name: latest.get(root(name), root(name))
        for name in parent
        if latest.get(root(name), root(name)) != name
    }


def to_host_clock(guest_time: pl.Expr, offset_s: pl.Expr) -> pl.Expr:
    """A guest's time on the host clock. ``offset_s`` is the guest's clock minus the
    hosts' (as matching estimates it), so the host saw the moment ``offset_s`` earlier."""
    return guest_time - pl.duration(microseconds=offset_s * 1e6)


def to_guest_clock(host_time: pl.Expr, offset_s: pl.Expr) -> pl.Expr:
    """A host's time on a guest's clock: the inverse of :func:`to_host_clock`."""
    return host_time + pl.duration(microseconds=offset_s * 1e6)


def _folder(path: pl.Expr) -> pl.Expr:
    """The folder part of a path (``/`` or ``\\`` separated); empty at the top."""
    return path.str.replace(r"[/\\][^/\\]*$", "")


def attribute_unnamed(events: pl.LazyFrame) -> pl.LazyFrame:
    """Give rows from logs that name no computer (pfirewall.log) the computer beside them.

    Customers export one folder per machine, and the firewall log sits in it or
    a folder or two below (``LogFiles/Firewall``). So an unnamed row takes the
    computer named most often by the other logs of its folder, else of its parent,
    else of its grandparent; ``lmtrace ingest --firewall-computer`` names it
    outright. Rows with no named neighbour keep a null computer and match nothing.
    """
    if events.filter(pl.col("computer").is_null()).select(pl.len()).collect().item() == 0:
        return events  # the usual case: one cheap scan of one column, nothing to attribute
    location = pl.coalesce(
        pl.concat_str("source_path", pl.lit("!"), "member"), pl.col("source_path")
    )
    events = events.with_columns(_folder(location).alias("_dir"))
    named = (
        events.filter(pl.col("computer").is_not_null())
        .group_by("_dir")
        .agg(pl.col("computer").mode().sort().first().alias("_near"))
    )
    unnamed = events.filter(pl.col("computer").is_null())
    guesses = []
    for level in range(3):
        unnamed = unnamed.with_columns(
            (pl.col("_dir") if level == 0 else _folder(pl.col(f"_d{level - 1}"))).alias(
                f"_d{level}"
            )
        )
        unnamed = unnamed.join(
            named.rename({"_dir": f"_d{level}", "_near": f"_near{level}"}),
            on=f"_d{level}",
            how="left",
        )
        guesses.append(pl.col(f"_near{level}"))
    attributed = unnamed.with_columns(pl.coalesce(guesses).alias("computer")).select(
        events.collect_schema().names()
    )
    return pl.concat([events.filter(pl.col("computer").is_not_null()), attributed]).drop("_dir")


def coverage(events: pl.LazyFrame) -> pl.DataFrame:
    """Per computer and channel: first and last event time and the event count."""
    return (
        events.group_by("computer", "channel")
        .agg(
            pl.col("timestamp").min().alias("first_ts"),
            pl.col("timestamp").max().alias("last_ts"),
            pl.len().alias("events"),
        )
        .with_columns(short_name(pl.col("computer")).alias("machine"))
        .sort("computer", "channel")
        .collect()
    )


def classify(
    cover: pl.DataFrame,
    tagged: pl.DataFrame,
    hosts: Sequence[str] = (),
    guests: Sequence[str] = (),
    renamed: Mapping[str, str] = {},
) -> pl.DataFrame:
    """One row per machine: ``machine`` (short name), ``computer``, ``role``, ``role_source``.

    ``role_source`` is ``given`` for ``--host``/``--guest`` and ``logged`` otherwise;
    a name given from before a rename (``renamed``, from :func:`aliases`) means the machine.
    """
    given = pl.DataFrame(
        {
            "machine": [h for h in hosts] + [g for g in guests],
            "_given": ["host"] * len(hosts) + ["guest"] * len(guests),
        },
        schema={"machine": pl.String, "_given": pl.String},
    )
    given = given.with_columns(machine_of(pl.col("machine"), renamed)).unique(
        "machine", keep="last"
    )
    host_like = (
        tagged.filter(
            pl.any_horizontal(pl.col("kind").str.starts_with(p) for p in HOST_KIND_PREFIXES)
        )
        .select(machine_of(pl.col("computer"), renamed).alias("machine"))
        .unique()
        .with_columns(pl.lit(True).alias("_logged_host"))
    )
    return (
        cover.group_by("machine")
        .agg(
            # The name it logged last: after a rename, the name it has now.
            pl.col("computer").sort_by("last_ts").last(),
            pl.col("computer").unique().sort().alias("names"),
            pl.col("channel").unique().sort().alias("channels"),
            pl.col("first_ts").min(),
            pl.col("last_ts").max(),
            pl.col("events").sum(),
        )
        .join(host_like, on="machine", how="left")
        .join(given, on="machine", how="left")
        .with_columns(
            pl.coalesce(
                "_given",
                pl.when(pl.col("_logged_host")).then(pl.lit("host")).otherwise(pl.lit("guest")),
            ).alias("role"),
            pl.when(pl.col("_given").is_not_null())
            .then(pl.lit("given"))
            .otherwise(pl.lit("logged"))
            .alias("role_source"),
        )
        .drop("_given", "_logged_host")
        .sort(pl.col("role") != "host", "machine")
    )


def unrelated(
    roles: pl.DataFrame, matches: pl.DataFrame, covers: pl.DataFrame, any_migration: bool
) -> pl.DataFrame:
    """Guests that are matched to no VM and whose logs cover no migration get the role
    ``unrelated``: another case's logs in the same folder, not a guest of this one.
    Roles the user gave stay as given; without any migration nothing can be told."""
    if not any_migration:
        return roles
    related = pl.concat([matches.select("machine"), covers.select("machine")])["machine"]
    is_unrelated = (
        (pl.col("role") == "guest")
        & (pl.col("role_source") != "given")
        & ~pl.col("machine").is_in(related.implode())
    )
    return roles.with_columns(
        pl.when(is_unrelated).then(pl.lit("unrelated")).otherwise("role").alias("role")
    )
