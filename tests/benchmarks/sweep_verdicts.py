"""Random `lmtrace simulate` options against their ground truth: where do verdicts differ?

Not collected by pytest (not named test_*). Run:

    python tests/benchmarks/sweep_verdicts.py [--count 300] [--seed 1] [--workdir DIR]

Each scenario's tests fix a few options; customers' bundles combine them. This draws
the simulator's options at random (scenario, clock offset, drift and steps, load,
noise, auditing, pfirewall.log, names, zones, NICs, network changes, scale), writes
the bundle, analyses it as a user would (`lmtrace analyze --json`, in a process of its
own), and compares the verdict with the bundle's ground_truth.json.

One line per bundle, then a summary:

* agree: the analysis found the truth's verdict;
* inconclusive: the analysis declined where the truth decides (a clock offset on a
  guess, a trigger beyond the offset search, a clock step back no log's order places:
  docs/simulate.md);
* opposite: affected read as not-affected, or not-affected as affected or
  likely-affected, the worst output lmtrace can give;
* crashed: the analysis failed or printed a traceback.

The exit code is 1 when a bundle crashed or got an opposite verdict. Bundles that do
not agree are kept under the work folder (``bNNN``) with the options that made them.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCENARIOS = ["quarantine-bug", "healthy", "host-fixed", "quarantine-disabled"]
SCENARIOS += ["failed-migration", "no-audit", "cluster-drain", "host-patched"]

# (probability of drawing the option, its possible argument lists)
OPTIONS: list[tuple[float, list[list[str]]]] = [
    (0.3, [["--guest-clock-offset", v] for v in ("-90s", "45s", "3m", "-1s", "7s", "2h")]),
    (0.2, [["--guest-clock-drift", v] for v in ("-50", "20", "200")]),
    (0.2, [["--guest-clock-jump", v] for v in ("4s", "30s", "-0.5s", "-3s", "-2m")]),
    (0.3, [["--name-mismatch"]]),
    (0.2, [["--load", v] for v in ("0.05", "0.5", "3", "20")]),
    (0.2, [["--noise", v] for v in ("0", "600", "3000")]),
    (0.3, [["--guest-tz", v] for v in ("Europe/Berlin", "America/New_York", "Asia/Kolkata")]),
    (0.4, [["--pfirewall"]]),
    (0.15, [["--start", v] for v in ("2025-11-02T05:20:00Z", "2025-12-31T23:55:00Z")]),
    (0.2, [["--ws2022-guests", "1"]]),
    (0.2, [["--multicast-drops"], ["--no-multicast-drops"]]),
    (0.2, [["--loopback-connections"], ["--no-loopback-connections"]]),
    (0.2, [["--nla-chatter"], ["--no-nla-chatter"]]),
    (0.2, [["--host-fqdn"], ["--no-host-fqdn"]]),
    (0.25, [["--wfp-audit", v] for v in ("full", "failure-only", "off")]),
    (0.2, [["--no-classification-logs"]]),
    (0.15, [["--guest-nics", "2"]]),
    (0.15, [["--extra-network-changes", v] for v in ("1", "2")]),
    (0.15, [["--unrelated-machines", v] for v in ("1", "2")]),
    (0.2, [["--guest-os", v] for v in ("2012r2", "2016", "2019")]),
    (0.15, [["--rename-guest"]]),
    (0.2, [["--vms", v] for v in ("1", "3")]),
    (0.2, [["--migrations", v] for v in ("1", "2", "4")]),
]

OPPOSITE = {
    "affected": {"not-affected"},
    "likely-affected": {"not-affected"},
    "not-affected": {"affected", "likely-affected"},
}


def draw(rng: random.Random) -> list[str]:
    """One bundle's `lmtrace simulate` options."""
    args = ["--scenario", rng.choice(SCENARIOS), "--seed", str(rng.randrange(1000))]
    for probability, choices in OPTIONS:
        if rng.random() < probability:
            args += rng.choice(choices)
    return args


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def lmtrace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True
    )


def judge(args: list[str], bundle: Path) -> tuple[str, str | None, str | None, str]:
    """(outcome, truth, verdict, what went wrong) of one drawn bundle."""
    made = lmtrace("simulate", *args, "--out", str(bundle))
    if made.returncode != 0:
        return "not-simulated", None, None, made.stderr.strip()[-300:]
    truth_file = bundle / "ground_truth.json"
    truth = json.loads(truth_file.read_text(encoding="utf-8"))["verdict"]
    truth_file.rename(bundle.with_name(bundle.name + "-truth.json"))  # not read as input
    done = lmtrace("analyze", str(bundle), "--out", str(bundle.with_name(bundle.name + "-out")),
                   "--json", "--quiet")  # fmt: skip
    try:
        verdict = json.loads(done.stdout)["verdict"]
    except (json.JSONDecodeError, KeyError):
        verdict = None
    if verdict is None or done.returncode not in (0, 1) or "Traceback" in done.stderr:
        return "crashed", truth, verdict, done.stderr.strip()[-300:]
    if verdict == truth:
        return "agree", truth, verdict, ""
    if verdict == "inconclusive":
        return "inconclusive", truth, verdict, ""
    if verdict in OPPOSITE.get(truth, set()):
        return "opposite", truth, verdict, ""
    return "other", truth, verdict, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="bundles to draw")
    parser.add_argument("--seed", type=int, default=1, help="seed of the draws")
    parser.add_argument("--workdir", type=Path, help="where bundles go (default: a temp folder)")
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="lmtrace-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)
    tally: Counter[str] = Counter()
    for n in range(options.count):
        args = draw(rng)
        bundle = work / f"b{n:03d}"
        for leftover in work.glob(f"b{n:03d}*"):
            _remove(leftover)
        outcome, truth, verdict, why = judge(args, bundle)
        tally[outcome] += 1
        print(f"{n:3d} {outcome:13} truth={truth} got={verdict} {' '.join(args)}", flush=True)
        if why:
            print(f"    {why}", flush=True)
        if outcome == "agree":
            for done in work.glob(f"b{n:03d}*"):
                _remove(done)
        else:
            (work / f"b{n:03d}-options.txt").write_text(" ".join(args) + "\n", encoding="utf-8")
    print(", ".join(f"{k} {v}" for k, v in sorted(tally.items())) + f"; kept in {work}")
    sys.exit(1 if tally["opposite"] or tally["crashed"] else 0)


if __name__ == "__main__":
    main()
