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


LOG = ["source_path", "member"]
"""One log file: its path, and its member when it came out of an archive."""
_FOLDER_LEVELS = 3  # a log's folder and two above it (LogFiles/Firewall) hold its machine's logs


def _parts() -> pl.Expr:
    """Where a row's log lies, as a list: folders, archives, then its file name (``/``,
    ``\\`` and the ``!`` between an archive and its member all separate them)."""
    location = pl.coalesce(pl.concat_str("source_path", pl.lit("!"), "member"), "source_path")
    return location.str.replace_all(r"[/\\!]+", "/").str.split("/")


def _up(parts: pl.Expr, levels: pl.Expr | int) -> pl.Expr:
    """The folder ``levels`` above a log (1: the one it is in), as one string."""
    return parts.list.head(parts.list.len() - levels).list.join("/")


def _words(text: pl.Expr) -> pl.Expr:
    """``text`` lower-cased, each run of characters that are neither letters nor digits made
    one ``|``, with ``|`` around it (``APP-VM01_pfirewall.log`` -> ``|app|vm01|pfirewall|log|``):
    a name is in a file name when its words are, in a row, so ``vm01`` is not in ``vm010``."""
    words = text.str.to_lowercase().str.replace_all(r"[^\p{L}\p{N}]+", "|")
    return pl.concat_str(pl.lit("|"), words, pl.lit("|"))


def unnamed_logs(
    events: pl.LazyFrame, renamed: Mapping[str, str] = {}
) -> tuple[pl.DataFrame, list[str]]:
    """Each log whose rows name no computer (pfirewall.log), the computer where it lies
    tells (null: none told), and a note per log that several computers fit.

    Rows: ``source_path``, ``member``, ``computer``, ``events``. The log names no machine,
    so where it lies must, and a wrong guess is worse than none: a guest's firewall log
    given to a host hides the guest's drops, and an affected verdict becomes a likely one
    for a false reason. So the nearest place that names any machine decides, looking
    outward from the file: its own name (``APP-VM01-pfirewall.log``: a flat folder of
    several machines' logs names them so), then each folder above it, by its name
    (``APP-VM01/pfirewall.log``) and, for the nearest three (``LogFiles/Firewall``), by
    the computers whose logs it holds. A computer's short name counts as whole words of a
    file or folder name, and only below the folder that holds the whole bundle (whose name
    is the user's: a case, a home folder). One machine there: the log is its; several: no
    machine's, and the note names them and how to decide (``--firewall-computer``). A
    renamed computer is one machine (``renamed``, from :func:`aliases`).
    """
    logs = (
        events.filter(pl.col("computer").is_null())
        .group_by(LOG)
        .agg(pl.len().alias("events"))
        .sort(LOG, nulls_last=False)
        .collect()
    )
    if logs.is_empty():  # the usual case: one cheap scan of one column, nothing to attribute
        return logs.with_columns(pl.lit(None, pl.String).alias("computer")), []
    named = (
        events.filter(pl.col("computer").is_not_null())
        .group_by(*LOG, "computer")
        .agg(pl.len().alias("_n"))
        .with_columns(machine_of(pl.col("computer"), renamed).alias("_machine"))
        .collect()
    )
    # Each machine under the computer name it logged most, as the folder rule always gave.
    computers = (
        named.group_by("_machine", "computer")
        .agg(pl.col("_n").sum())
        .sort("_n", "computer", descending=[True, False])
        .group_by("_machine", maintain_order=True)
        .agg(pl.col("computer").first())
    )
    # The folder holding the whole bundle: as many parts as every log's folder starts with.
    folders = pl.concat([named.select(LOG), logs.select(LOG)]).select(
        _parts().list.head(_parts().list.len() - 1).alias("_part")
    )
    root = (
        folders.with_columns(pl.int_ranges(0, pl.col("_part").list.len()).alias("_i"))
        .explode("_part", "_i")
        .drop_nulls("_i")
        .group_by("_i")
        .agg(((pl.col("_part").n_unique() == 1) & (pl.len() == folders.height)).alias("_all"))
        .sort("_i")
        .select((pl.col("_all").not_().cum_sum() == 0).sum())
        .item()
    )
    names = (
        named.select(_words(short_name(pl.col("computer"))).alias("_name"), "_machine")
        .unique()
        .filter(pl.col("_name").str.contains(r"[\p{L}\p{N}]"))
    )
    beside = named.select(_up(_parts(), 1).alias("_folder"), "_machine").unique()
    places = (
        logs.with_columns(_parts().alias("_parts"))
        .with_columns(pl.int_ranges(0, pl.col("_parts").list.len()).alias("_level"))
        .explode("_level")
        .with_columns(
            pl.col("_parts")
            .list.get(pl.col("_parts").list.len() - 1 - pl.col("_level"))
            .alias("_place"),
            _up(pl.col("_parts"), pl.col("_level")).alias("_folder"),
            (pl.col("_parts").list.len() - 1 - pl.col("_level") >= root).alias("_inside"),
        )
    )
    in_names = (
        places.filter("_inside")
        .join(names, how="cross")
        .filter(_words(pl.col("_place")).str.contains(pl.col("_name"), literal=True))
    )
    # A name within a longer one found there is a word of it: vm01 of APP-VM01-pfirewall.log.
    within = (
        in_names.join(in_names, on=[*LOG, "_level"], nulls_equal=True, suffix="_longer")
        .filter(
            (pl.col("_name") != pl.col("_name_longer"))
            & pl.col("_name_longer").str.contains(pl.col("_name"), literal=True)
        )
        .select(*LOG, "_level", "_name")
    )
    in_names = in_names.join(within, on=[*LOG, "_level", "_name"], how="anti", nulls_equal=True)
    in_folders = places.filter(pl.col("_level").is_between(1, _FOLDER_LEVELS)).join(
        beside, on="_folder"
    )
    found = (
        pl.concat([f.select(*LOG, "_level", "_machine") for f in (in_names, in_folders)])
        .filter(pl.col("_level") == pl.col("_level").min().over(LOG))
        .group_by(LOG)
        .agg(pl.col("_machine").unique().sort().alias("_fit"))
    )
    fits = (
        logs.join(found, on=LOG, how="left", nulls_equal=True)
        .with_columns(
            pl.when(pl.col("_fit").list.len() == 1)
            .then(pl.col("_fit").list.first())
            .alias("_machine")
        )
        .join(computers, on="_machine", how="left")
    )
    notes = [
        f"{source}{'!' + member if member else ''} names no computer, and where it lies names"
        f" several ({', '.join(fit)}): its {n:,} event(s) are left to no machine rather than"
        " guessed, so what it blocked counts for none; give its computer with"
        f" --firewall-computer, or name the file after it (e.g. {fit[0]}-pfirewall.log)"
        for source, member, n, fit in fits.filter(pl.col("_fit").list.len() > 1)
        .select(*LOG, "events", "_fit")
        .iter_rows()
    ]
    return fits.select(*LOG, "computer", "events"), notes


def attribute_unnamed(events: pl.LazyFrame, logs: pl.DataFrame) -> pl.LazyFrame:
    """``events`` with the rows that name no computer given their log's, as
    :func:`unnamed_logs` told it (still null where it told none)."""
    if logs["computer"].is_null().all():
        return events
    unnamed = (
        events.filter(pl.col("computer").is_null())
        .drop("computer")
        .join(logs.lazy().select(*LOG, "computer"), on=LOG, how="left", nulls_equal=True)
        .select(events.collect_schema().names())
    )
    return pl.concat([events.filter(pl.col("computer").is_not_null()), unnamed])


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
