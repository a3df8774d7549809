"""Quarantine windows in the guest after each migration, and the traffic they blocked.

Microsoft's quarantine.md: after a network change the guest firewall blocks every
new non-loopback inbound connection until the network is categorized again and
the interface's filters are re-plumbed; the seed adds that, when that never
happens (the bug), all interfaces are un-quarantined 7 s after the *last* network
event. So a window:

* opens at the guest's Netvsc 14 (Q0) found near the migration's completion, and
  runs at most ``safety_timeout_s`` after the last network change that follows
  within the window (one per NIC, or a repeated indication);
* closes at the first of: an event that means "the network was classified"
  (catalog ``end_kinds``, whose entries' value conditions turn "no network",
  "no connectivity" and "Identifying..." into other kinds); an allowed inbound
  TCP connection from another machine (traffic flows again); the safety timeout.
* is as long as its quarantine lasted unbroken: where one of those shows the
  quarantine over between two changes of the chain, the length counts from the
  later change (``_restarted``).

What closed it is ``end_evidence``:

==========================  ================================================  =================
end_evidence                means                                             quarantine_class
==========================  ================================================  =================
classified                  a classification event (``end_ref``)              by its duration
allowed-inbound             inbound TCP from another machine allowed again    by its duration
timeout-no-classification   the guest's classification logs cover the         safety-timeout
                            window and stay silent for the timeout
timeout-bracketed           no classification log, drops until the timeout    safety-timeout
                            and traffic allowed again right after it
timeout-assumed             nothing in the logs closes it; the end is placed  prolonged when
                            at the model's timeout, an inference              drops go on past
                                                                              the normal span,
                                                                              else undetermined
==========================  ================================================  =================

Traffic the quarantine does not govern (catalog ``[scopes]``: loopback, multicast,
broadcast, and an address talking to itself) neither closes a window nor counts as
its impact; it is counted apart. Windows logs one dropped packet as a 5152 and a
5157 when both audit subcategories are on, so blocked figures count packets.
Times of the window are on the guest's clock; ``*_host`` columns are on the host's
clock (guest time minus offset).
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from pipeline.catalog import ModelParams, Scopes
from pipeline.machines import to_guest_clock, to_host_clock

REF = ("source_path", "member", "record_id", "event_id")
END_WORDS = {
    "classified": "the network's classification",
    "allowed-inbound": "inbound connections being allowed again",
    "timeout-no-classification": "the {timeout:g} s safety timeout, with no network classification"
    " in the guest's logs",
    "timeout-bracketed": "the {timeout:g} s safety timeout (drops until it, connections allowed"
    " right after it)",
    "timeout-assumed": "nothing the logs show (the {timeout:g} s safety timeout is assumed)",
}
"""What closed a window (``end_evidence``), in the words every output uses."""
CLASS_WORDS = {
    "none": "no quarantine to speak of",
    "normal": "the normal 2-3 s",
    "prolonged": "longer than the normal 2-3 s",
    "safety-timeout": "the full safety timeout: the bug's signature",
    "undetermined": "for a time the logs do not show",
}
"""A window's ``quarantine_class``, in the words every output uses."""
QUARANTINE_SCOPE = "remote"
"""The one traffic scope the quarantine governs: another machine's new inbound connection."""


def _seconds(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_microseconds() / 1e6


def _after(ts: str, seconds: float) -> pl.Expr:
    """The time ``seconds`` after the time column ``ts``."""
    return pl.col(ts) + timedelta(seconds=seconds)


def _on_host_clock(ts: str) -> pl.Expr:
    """A guest-clock time column on the host clock, by the row's ``clock_offset_s``."""
    return to_host_clock(pl.col(ts), pl.col("clock_offset_s"))


def traffic_scope(scopes: Scopes) -> pl.Expr:
    """``scope`` of a traffic row: a name of the catalog's ``[scopes]``, ``self``, or
    ``remote`` (the traffic the quarantine governs).

    Both addresses are looked at, not only the remote one: the sides of a 5157 for
    multicast appear the other way round in real logs (velociraptor RDPAuth_Security),
    so the group address can sit in either column.
    """
    both = (pl.col("local_address"), pl.col("remote_address"))
    scope = pl.when(
        pl.col("local_address").is_not_null()
        & (
            pl.col("local_address").str.to_lowercase()
            == pl.col("remote_address").str.to_lowercase()
        )
    ).then(pl.lit("self"))
    for name, patterns in scopes.patterns.items():
        hit = pl.any_horizontal(
            address.str.contains(pattern).fill_null(False)
            for address in both
            for pattern in patterns
        )
        scope = scope.when(hit).then(pl.lit(name))
    return scope.otherwise(pl.lit(QUARANTINE_SCOPE)).alias("scope")


def find_windows(
    pairs: pl.DataFrame, guest_events: pl.DataFrame, model: ModelParams, tolerance_s: float
) -> pl.DataFrame:
    """One row per (migration, guest) whose guest logged the trigger near the completion.

    ``pairs`` holds ``migration_id``, ``machine``, ``end`` (host clock) and
    ``clock_offset_s``; ``guest_events`` are tagged events of guests with ``machine``.

    The trigger is looked for where the guest's offset puts it (within the
    tolerance, allowing the notification lag); ``clock_offset_s`` already holds the
    clock steps the guest logged up to the migration (:mod:`pipeline.guest_clock`), and
    such a window's ``trigger_match`` is ``clock-step``. A migration left without a
    trigger then takes the nearest unclaimed one within ``clock_jump_max_s``: the guest
    clock can step when it resumes on the new host without logging it, and then that
    migration's own offset (``clock_offset_s`` of the window, ``trigger_match`` =
    ``clock-jump``) places its window on the host clock.
    """
    triggers = guest_events.filter(pl.col("kind").is_in(model.trigger_kinds)).select(
        "machine", pl.col("timestamp").alias("q0"), pl.struct(*REF, "kind").alias("trigger_ref")
    )
    candidates = pairs.filter(
        pl.col("end").is_not_null() & pl.col("clock_offset_s").is_not_null()
    ).with_columns(to_guest_clock(pl.col("end"), pl.col("clock_offset_s")).alias("expected"))
    located = (
        candidates.with_columns(
            (pl.col("expected") - pl.duration(microseconds=tolerance_s * 1e6)).alias("_lo")
        )
        .sort("_lo")
        .join_asof(
            triggers.sort("q0"),
            left_on="_lo",
            right_on="q0",
            by="machine",
            strategy="forward",
            check_sortedness=False,
        )
    )
    reach = tolerance_s + model.netvsc_lag_max_s
    near = located.filter(
        pl.col("q0").is_not_null() & (_seconds(pl.col("q0") - pl.col("expected")) <= reach)
    ).drop("_lo")
    unclaimed = triggers.join(near.select("machine", "q0"), on=["machine", "q0"], how="anti")
    jumped = (
        candidates.join(near.select("migration_id"), on="migration_id", how="anti")
        .sort("expected")
        .join_asof(
            unclaimed.sort("q0"),
            left_on="expected",
            right_on="q0",
            by="machine",
            strategy="nearest",
            tolerance=timedelta(seconds=model.clock_jump_max_s + reach),
            check_sortedness=False,
        )
        .filter(pl.col("q0").is_not_null())
        .with_columns(
            (pl.col("clock_offset_s") + _seconds(pl.col("q0") - pl.col("expected"))).alias(
                "clock_offset_s"
            )
        )
    )
    stepped = (
        pl.col("clock_steps_s").fill_null(0.0) != 0.0
        if "clock_steps_s" in pairs.columns
        else pl.lit(False)
    )
    return pl.concat(
        [
            near.with_columns(
                pl.when(stepped).then(pl.lit("clock-step")).otherwise(pl.lit("offset"))
            ).rename({"literal": "trigger_match"}),
            jumped.with_columns(pl.lit("clock-jump").alias("trigger_match")),
        ],
        how="diagonal_relaxed",
    )


def _without_duplicate_sources(guest_events: pl.DataFrame, model: ModelParams) -> pl.DataFrame:
    """Drop fallback-source traffic (pfirewall.log) where WFP auditing logged its kind:
    its dropped packets for guests with WFP blocked events, its allowed ones for guests
    with WFP allowed events. Auditing failures only (5152/5157 but no 5156, a success
    audit) is common, and there pfirewall.log's ALLOW lines are the only allowed
    connections the logs hold: the first one after the network change ends the window."""
    kept = guest_events
    for family in (model.blocked_kinds, model.allowed_kinds):
        fallback = [k for k in family if k in model.fallback_kinds]
        primary = guest_events.filter(
            pl.col("kind").is_in(family) & ~pl.col("kind").is_in(model.fallback_kinds)
        )["machine"].unique()
        kept = kept.filter(
            ~(pl.col("kind").is_in(fallback) & pl.col("machine").is_in(primary.implode()))
        )
    return kept


def starts_a_chain(timeout_s: float) -> pl.Expr:
    """True for a guest's network change (``machine``, ``timestamp``) that begins a chain:
    its first, or one more than ``timeout_s`` (the safety timeout) after the one before.
    The changes of a chain follow one resume (a Netvsc 14 per NIC, or a repeated
    indication)."""
    gap = pl.col("timestamp").diff().over("machine", order_by="timestamp")
    return (_seconds(gap) > timeout_s).fill_null(True)


def _last_network_event(
    windows: pl.DataFrame, triggers: pl.DataFrame, timeout_s: float
) -> pl.DataFrame:
    """Add ``last_change_at`` and ``network_changes`` to each window.

    Network changes of one guest less than the safety timeout apart form one chain
    (a Netvsc 14 per NIC, or a repeated indication): the timeout counts from the
    chain's last one at or after the window's Q0.
    """
    chained = (
        triggers.select("machine", "timestamp")
        .sort("machine", "timestamp")
        .with_columns(starts_a_chain(timeout_s).cum_sum().over("machine").alias("_chain"))
    )
    chain_of_q0 = chained.unique(["machine", "timestamp"]).rename({"timestamp": "q0"})
    followers = (
        windows.select("migration_id", "machine", "q0")
        .join(chain_of_q0, on=["machine", "q0"])
        .join(chained, on=["machine", "_chain"])
        .filter(pl.col("timestamp") >= pl.col("q0"))
        .group_by("migration_id")
        .agg(
            pl.col("timestamp").max().alias("last_change_at"),
            pl.len().cast(pl.Int64).alias("network_changes"),
        )
    )
    return windows.join(followers, on="migration_id", how="left").with_columns(
        pl.coalesce("last_change_at", "q0").alias("last_change_at"),
        pl.col("network_changes").fill_null(1),
    )


_EVIDENCE = ["machine", "timestamp"]


def _restarted(windows: pl.DataFrame, triggers: pl.DataFrame, over: pl.DataFrame) -> pl.DataFrame:
    """Add ``q_from``: where ``over`` (a classification, an allowed inbound connection)
    shows a chain's quarantine over between two of its network changes, the quarantine
    that lasts begins again at the later change; else at ``q0``.

    A guest that answered inbound connections between two changes was not cut off
    across them: measured from the first change, three short quarantines 3.5 s apart
    read as one prolonged one.
    """
    changes = (
        windows.select("migration_id", "machine", "q0", "last_change_at")
        .join(triggers.select("machine", "timestamp").unique(), on="machine")
        .filter(pl.col("timestamp").is_between(pl.col("q0"), pl.col("last_change_at")))
        .sort("timestamp")
    )
    seen = over.rename({"timestamp": "_over_at"}).sort("_over_at")
    # Each change with the one before it, and the last sign of the quarantine over before it.
    ordered = changes.with_columns(
        pl.col("timestamp").shift(1).over("migration_id", order_by="timestamp").alias("_previous")
    ).join_asof(
        seen,
        left_on="timestamp",
        right_on="_over_at",
        by="machine",
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    again = (
        ordered.filter(pl.col("_over_at") > pl.col("_previous"))
        .group_by("migration_id")
        .agg(pl.col("timestamp").max().alias("q_from"))
    )
    return windows.join(again, on="migration_id", how="left", maintain_order="left").with_columns(
        pl.coalesce("q_from", "q0").alias("q_from")
    )


def _first_after(
    windows: pl.DataFrame, events: pl.DataFrame, name: str, after: str, horizon_s: float
) -> pl.DataFrame:
    """Join each window to the first of ``events`` strictly after its ``after`` time, within
    ``horizon_s`` of it: ``{name}_at`` and ``{name}_ref`` (null when there is none)."""
    right = events.select(
        "machine",
        pl.col("timestamp").alias(f"{name}_at"),
        pl.struct(*REF, "kind").alias(f"{name}_ref"),
    ).sort(f"{name}_at")
    joined = windows.sort(after).join_asof(
        right,
        left_on=after,
        right_on=f"{name}_at",
        by="machine",
        strategy="forward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    too_late = _seconds(pl.col(f"{name}_at") - pl.col(after)) > horizon_s
    return joined.with_columns(
        pl.when(too_late).then(None).otherwise(pl.col(f"{name}_at")).alias(f"{name}_at"),
        pl.when(too_late).then(None).otherwise(pl.col(f"{name}_ref")).alias(f"{name}_ref"),
    )


def _packet_ids(blocked: pl.DataFrame, pair_s: float) -> pl.DataFrame:
    """Add ``packet``: one id per dropped packet, shared by the events that logged it.

    Windows logs one dropped packet as a 5152 and a 5157 (same TimeCreated, same
    filter) when both audit subcategories are on. Blocked events of one guest
    between the same two endpoints (in either order: the sides of some events
    appear swapped) within ``pair_s`` of each other form a burst; the n-th event of
    each event id in a burst is the n-th packet.
    """
    a = pl.concat_str(pl.col("local_address"), pl.lit(":"), pl.col("local_port").cast(pl.String))
    b = pl.concat_str(pl.col("remote_address"), pl.lit(":"), pl.col("remote_port").cast(pl.String))
    keyed = blocked.with_columns(
        pl.concat_str(
            pl.col("machine"),
            pl.col("protocol").cast(pl.String),
            pl.min_horizontal(a, b),
            pl.max_horizontal(a, b),
            separator="|",
            ignore_nulls=True,
        ).alias("_key")
    ).sort("_key", "timestamp")
    new_burst = (pl.col("_key") != pl.col("_key").shift(1)) | (
        pl.col("timestamp").diff() > timedelta(seconds=pair_s)
    )
    return (
        keyed.with_columns(new_burst.fill_null(True).cum_sum().alias("_burst"))
        .with_columns(pl.int_range(pl.len()).over("_burst", "event_id").alias("_nth"))
        .with_columns(pl.struct("_burst", "_nth").rank("dense").cast(pl.Int64).alias("packet"))
        .drop("_key", "_burst", "_nth")
    )


def measure(
    windows: pl.DataFrame,
    guest_events: pl.DataFrame,
    classification_logs: pl.DataFrame,
    model: ModelParams,
    scopes: Scopes,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Close each window and count the inbound packets it blocked.

    ``classification_logs`` has, per guest, ``logged_from`` (the earliest start of
    its classification channels) and ``last_seen`` (its last event in any log): a
    window those logs cover and leave silent ends at the safety timeout by
    evidence, one they do not cover only by assumption. Returns (windows with end,
    duration, class and counts; the blocked inbound events inside a window, one
    row each, with ``scope`` and ``packet``).
    """
    guest_events = _without_duplicate_sources(guest_events, model)
    is_traffic = pl.col("kind").is_in(model.blocked_kinds + model.allowed_kinds)
    traffic = guest_events.filter(is_traffic & pl.col("inbound")).with_columns(
        traffic_scope(scopes)
    )
    triggers = guest_events.filter(pl.col("kind").is_in(model.trigger_kinds))
    ends = guest_events.filter(pl.col("kind").is_in(model.end_kinds))
    allowed = traffic.filter(
        pl.col("kind").is_in(model.allowed_kinds)
        & pl.col("protocol").is_in(model.end_evidence_protocols)
        & (pl.col("scope") == QUARANTINE_SCOPE)
    )
    w = _last_network_event(windows, triggers, model.safety_timeout_s).with_columns(
        _after("last_change_at", model.safety_timeout_s).alias("timeout_at")
    )
    w = _first_after(w, ends, "classified", "last_change_at", model.window_max_s)
    w = _first_after(w, allowed, "allowed", "last_change_at", model.window_max_s)
    w = _restarted(w, triggers, pl.concat([ends.select(_EVIDENCE), allowed.select(_EVIDENCE)]))
    inside = (
        traffic.filter(pl.col("kind").is_in(model.blocked_kinds))
        .sort("timestamp")
        .join_asof(
            w.select("machine", "q0", "timeout_at", "migration_id", "clock_offset_s").sort("q0"),
            left_on="timestamp",
            right_on="q0",
            by="machine",
            strategy="backward",
            check_sortedness=False,
        )
        .filter(pl.col("q0").is_not_null() & (pl.col("timestamp") <= pl.col("timeout_at")))
    )
    last_drop = (
        inside.filter(pl.col("scope") == QUARANTINE_SCOPE)
        .group_by("migration_id")
        .agg(pl.col("timestamp").max().alias("last_drop_at"))
    )
    w = _close(
        w.join(last_drop, on="migration_id", how="left").join(
            classification_logs, on="machine", how="left"
        ),
        model,
    )
    blocked = (
        _packet_ids(
            inside.join(w.select("migration_id", "q_end"), on="migration_id").filter(
                pl.col("timestamp") <= pl.col("q_end")
            ),
            model.packet_pair_s,
        )
        .with_columns(_on_host_clock("timestamp").alias("timestamp_host"))
        .drop("q0", "timeout_at", "q_end")
        .sort("timestamp")
    )
    return _counted(w, blocked, model), blocked


def _counted(w: pl.DataFrame, blocked: pl.DataFrame, model: ModelParams) -> pl.DataFrame:
    """Packet counts per window: of quarantine scope by protocol, and of other scopes.

    A window that inbound traffic ended within the normal span without a single
    drop had no quarantine to speak of (class ``none``: quarantine disabled, or
    nobody knocked).
    """
    governed = pl.col("scope") == QUARANTINE_SCOPE
    is_origin_proof = pl.col("filter_origin").str.to_lowercase() == "quarantine default"

    def packets_where(condition: pl.Expr) -> pl.Expr:
        return pl.col("packet").filter(condition).n_unique().cast(pl.Int64)

    counts = blocked.group_by("migration_id").agg(
        packets_where(governed).alias("blocked_inbound"),
        packets_where(governed & (pl.col("protocol") == 6)).alias("blocked_tcp"),
        packets_where(governed & (pl.col("protocol") == 17)).alias("blocked_udp"),
        packets_where(governed & ~pl.col("protocol").fill_null(-1).is_in([6, 17])).alias(
            "blocked_other"
        ),
        packets_where(governed & is_origin_proof).alias("quarantine_default_drops"),
        packets_where(~governed).alias("blocked_out_of_scope"),
        pl.len().cast(pl.Int64).alias("blocked_events"),
    )
    columns = (
        "blocked_inbound",
        "blocked_tcp",
        "blocked_udp",
        "blocked_other",
        "quarantine_default_drops",
        "blocked_out_of_scope",
        "blocked_events",
    )
    none = (
        (pl.col("end_evidence") == "allowed-inbound")
        & (pl.col("blocked_inbound") == 0)
        & (pl.col("q_duration_s") <= model.normal_quarantine_max_s)
    )
    return (
        w.join(counts, on="migration_id", how="left")
        .with_columns(pl.col(columns).fill_null(0))
        .with_columns(
            pl.when(none)
            .then(pl.lit("none"))
            .otherwise("quarantine_class")
            .alias("quarantine_class")
        )
    )


def _close(w: pl.DataFrame, model: ModelParams) -> pl.DataFrame:
    """``q_end``, ``end_evidence``, ``q_duration_s``, ``blocked_until_s`` and
    ``quarantine_class`` of each window (see the module's table)."""
    before_timeout = lambda at: pl.col(at).is_not_null() & (pl.col(at) < pl.col("timeout_at"))  # noqa: E731
    classified = before_timeout("classified_at") & (
        pl.col("allowed_at").is_null() | (pl.col("classified_at") <= pl.col("allowed_at"))
    )
    allowed = ~classified & before_timeout("allowed_at")
    # The guest's classification logs were being written before the window opened and
    # it went on logging after the timeout: their silence in between is evidence.
    covered = (pl.col("logged_from") <= pl.col("q0")) & (
        pl.col("last_seen") >= pl.col("timeout_at")
    )
    blocked_until = _seconds(pl.col("last_drop_at") - pl.col("q_from"))
    bracketed = pl.col("allowed_at").is_not_null() & (blocked_until >= model.safety_timeout_s - 1.0)
    evidence = (
        pl.when(classified)
        .then(pl.lit("classified"))
        .when(allowed)
        .then(pl.lit("allowed-inbound"))
        .when(covered.fill_null(False))
        .then(pl.lit("timeout-no-classification"))
        .when(bracketed.fill_null(False))
        .then(pl.lit("timeout-bracketed"))
        .otherwise(pl.lit("timeout-assumed"))
    )
    end = (
        pl.when(classified)
        .then(pl.col("classified_at"))
        .when(allowed)
        .then(pl.col("allowed_at"))
        .otherwise(pl.col("timeout_at"))
    )
    w = w.with_columns(
        evidence.alias("end_evidence"),
        end.alias("q_end"),
        blocked_until.alias("blocked_until_s"),
    ).with_columns(_seconds(pl.col("q_end") - pl.col("q_from")).alias("q_duration_s"))
    observed = pl.col("end_evidence").is_in(["classified", "allowed-inbound"])
    by_duration = (
        pl.when(pl.col("q_duration_s") <= model.normal_quarantine_max_s)
        .then(pl.lit("normal"))
        .otherwise(pl.lit("prolonged"))
    )
    quarantine_class = (
        pl.when(observed)
        .then(by_duration)
        .when(pl.col("end_evidence").is_in(["timeout-no-classification", "timeout-bracketed"]))
        .then(pl.lit("safety-timeout"))
        .when(pl.col("blocked_until_s") > model.normal_quarantine_max_s)
        .then(pl.lit("prolonged"))
        .otherwise(pl.lit("undetermined"))
    )
    end_ref = (
        pl.when(classified).then(pl.col("classified_ref")).when(allowed).then(pl.col("allowed_ref"))
    )
    return w.with_columns(
        quarantine_class.alias("quarantine_class"),
        end_ref.alias("end_ref"),
        _on_host_clock("q0").alias("q0_host"),
        _on_host_clock("q_end").alias("q_end_host"),
    ).drop("classified_ref", "allowed_ref", "logged_from", "last_seen", "q_from")
