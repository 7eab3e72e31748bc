#!/usr/bin/env python3
"""The Performance block of the top README, written from bench/results/*.json.

    .venv/bin/python bench/readme.py [--check]

README.md holds, in its Performance section, a block between the lines BEGIN and END below;
every figure in it comes from the results files of bench/ (the runs that wrote RESULTS.md):
`latest.json` (compare.py) for the headline, and `storage.json` and `micro.json` when they
measured the same commit. A results file that is not from a clean run at a commit of this
repository (see `benchlib.unfit`) gives no figures, and the block says so. Rows where the load
generator was the bound (`benchlib.CLIENT_BOUND`) say it, and which way it bends the ratio.

compare.py, storage_qos1.py and micro/report.py call this after they wrote the committed
results, so `make bench` leaves RESULTS.md, results/ and the README in step. Like them it
refuses to write README.md from a work tree with uncommitted changes to the code or the
benchmarks. `--check` writes nothing and exits 1 if the block differs from the results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    ROOT,
    BenchError,
    bound_text,
    check_outputs,
    client_bound,
    fmt_time,
    provenance,
    report_provenance,
    short,
    unfit,
)

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
NOTE = ("<!-- Written by bench/readme.py from bench/results/*.json (`make bench`); edits "
        "between these markers are overwritten. -->")
FILES = {"compare": "latest.json", "storage": "storage.json", "micro": "micro.json"}

# compare.py scenario -> the README's name for it
HEADLINE = [
    ("qos0", "QoS 0, 1 → 1, batching clients"),
    ("qos1", "QoS 1, 1 → 1, batching clients"),
    ("qos2", "QoS 2, 1 → 1, batching clients"),
    ("qos0-single", "QoS 0, 1 → 1, one packet per write"),
    ("fanout8", "QoS 0, fan-out 1 → 8, batching clients"),
    ("m2m", "QoS 0, 16 → 16, wildcards, batching clients"),
    ("m2m-single", "QoS 0, 16 → 16, wildcards, one packet per write"),
    ("durable", "QoS 1 to a persistent session, SQLite `sync` vs Mosquitto's in-memory queue"),
    ("retained", "retained messages to a new `#` subscriber, delivery rate"),
    ("latency", "p99 latency at {rate} msg/s, broker and client on separate CPUs"),
    ("latency-1cpu", "p99 latency at {rate} msg/s, broker and client on one CPU"),
    ("idle", "memory per 1,000 idle connections"),
]
NAMES = {"hbroker": "hbroker", "mosquitto": "Mosquitto", "relay": "the relay"}


def load(results: Path) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for key, name in FILES.items():
        path = results / name
        out[key] = json.loads(path.read_text()) if path.exists() else None
    return out


def full_commit(commit: str, root: Path) -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                              cwd=root, text=True, capture_output=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def num(v: Any) -> bool:
    return isinstance(v, (int, float)) and v == v


def fmt(v: Any, digits: int = 0, suffix: str = "") -> str:
    return f"{v:,.{digits}f}{suffix}" if num(v) else "–"


def ratio(v: Any) -> str:
    return f"{v:.2f}×" if num(v) else "–"


def target_text(t: dict[str, Any]) -> str:
    op = {">=": "≥", "<=": "≤", "<": "<"}[t["op"]]
    if t["of"] == "ratio":
        return f"{op} {t['bound']:g}×"
    if t["metric"] == "p99":
        return f"{op} {t['bound'] / 1000:g} ms"
    if t["metric"] == "cpu_percent":
        return f"{op} {t['bound']:g} % of a core"
    return f"{op} {t['bound']:g} MB"


def bound_runs(report: dict[str, Any], scenario: str) -> dict[str, float]:
    """compare.py's client-bound runs of a throughput scenario (see compare.bound_runs)."""
    from compare import CLIENT_BOUND, SCENARIOS

    if scenario not in SCENARIOS or SCENARIOS[scenario].kind != "load":
        return {}
    threshold = report["plan"].get("client_bound", CLIENT_BOUND)
    return client_bound(report["summary"]["medians"].get(scenario, {}), threshold)


def headline(report: dict[str, Any]) -> list[str]:
    s = report["summary"]
    med, rat = s["medians"], s["ratios"]
    plan = report["plan"]
    rate = f"{plan.get('rate', 10000):,}"
    lines = ["| scenario | hbroker ÷ Mosquitto | target | met | load generator |",
             "|---|---:|---|---|---|"]
    for name, label in HEADLINE:
        if name not in plan["scenarios"] or name not in rat:
            continue
        hb = med.get(name, {}).get("hbroker", {})
        r = rat[name]["ratio"]
        if name.startswith("latency"):
            shown = f"{fmt(hb.get('p99', float('nan')) / 1000, 2)} ms ({ratio(r)})"
        elif name == "idle":
            shown = f"{fmt(hb.get('rss_per_1000_mb'), 2)} MB ({ratio(r)})"
        else:
            shown = ratio(r)
        if name == "retained":
            label = f"{plan['retained']:,} {label}"
        targets = [t for t in s["targets"] if t["scenario"] == name
                   and (name != "idle" or t["metric"] == "rss_per_1000_mb")]
        target = " and ".join(target_text(t) for t in targets)
        passed = [t["passed"] for t in targets]
        met = "" if not targets else ("yes" if all(p is True for p in passed) else
                                      "**no**" if any(p is False for p in passed) else "–")
        bound = bound_text(bound_runs(report, name), "hbroker", "mosquitto", NAMES)
        lines.append(f"| {label.format(rate=rate)} | {shown} | {target} | {met} | {bound} |")
    idle = med.get("idle", {}).get("hbroker", {})
    cpu_targets = [t for t in s["targets"] if t["scenario"] == "idle"
                   and t["metric"] == "cpu_percent"]
    if "idle" in plan["scenarios"] and num(idle.get("cpu_percent")):
        passed = [t["passed"] for t in cpu_targets]
        met = "" if not cpu_targets else ("yes" if all(p is True for p in passed) else
                                          "**no**" if any(p is False for p in passed) else "–")
        lines.append(f"| CPU of {fmt(idle.get('connections'))} idle connections (hbroker) | "
                     f"{fmt(idle['cpu_percent'], 2)} % of a core | "
                     f"{' and '.join(target_text(t) for t in cpu_targets)} | {met} | |")
    return lines


def client_bound_sentence(report: dict[str, Any]) -> str:
    from compare import CLIENT_BOUND, SCENARIOS

    threshold = report["plan"].get("client_bound", CLIENT_BOUND)
    rows = [n for n in report["plan"]["scenarios"] if n in SCENARIOS
            and SCENARIOS[n].kind == "load"]
    flagged = {n: bound_runs(report, n) for n in rows}
    flagged = {n: b for n, b in flagged.items() if b}
    labels = dict(HEADLINE)
    if not flagged:
        top = max((x.get("client_cpu", float("nan")) for n in rows
                   for x in report["summary"]["medians"].get(n, {}).values()
                   if num(x.get("client_cpu"))), default=float("nan"))
        return (f"In no throughput row did the load generator (one C thread) use "
                f"{threshold * 100:.0f} % of a core or more (at most {fmt(top * 100)} %): "
                "the brokers, not the client, set the rates.")
    listed = "; ".join(
        f"{labels.get(n, n)} (" + ", ".join(f"{NAMES.get(b, b)}'s run {c * 100:.0f} %"
                                            for b, c in runs.items()) + ")"
        for n, runs in flagged.items())
    return (f"**The load generator was the bound** (one C thread at ≥ {threshold * 100:.0f} % "
            f"of a core) in: {listed}. There the client, not only the broker, set the rate, "
            "which understates that broker: the ratio is a lower bound where hbroker's run was "
            "client-bound and an upper bound where Mosquitto's was (last column).")


def relay_sentence(report: dict[str, Any]) -> str:
    s = report["summary"]
    parts = []
    for name, what in (("qos0", "with batching clients"), ("qos0-single",
                                                           "with one packet per write")):
        f = s.get("relay_fraction", {}).get(name)
        hb = s["medians"].get(name, {}).get("hbroker", {}).get("rate")
        if not f or not num(hb):
            continue
        note = bound_text(bound_runs(report, name), "hbroker", "relay", NAMES)
        note = note.replace("the ratio", "the fraction")
        parts.append(f"{fmt(hb)} messages/s {what}, {f['hbroker']:.2f} of what the C relay "
                     f"managed in the same run (Mosquitto: {fmt(f.get('mosquitto'), 2)})"
                     + (f" ({note})" if note else ""))
    if not parts:
        return ""
    return ("At QoS 0 one to one, hbroker delivered " + "; ".join(parts) + ". The relay only "
            "forwards PUBLISH bytes: the machine's ceiling.")


def latency_sentence(report: dict[str, Any]) -> str:
    med = report["summary"]["medians"]
    out = []
    apart = med.get("latency", {})
    relay = apart.get("relay", {}).get("p99")
    if num(relay):
        out.append(f"At {report['plan'].get('rate', 10000):,} msg/s on separate CPUs the C "
                   f"relay had a p99 of {relay / 1000:.2f} ms, the floor that the machine and "
                   "the client set (a wakeup across CPUs costs an inter-processor interrupt on "
                   "a virtual machine).")
    one = med.get("latency-1cpu", {})
    hb, mq = one.get("hbroker", {}).get("broker_cpu"), one.get("mosquitto", {}).get("broker_cpu")
    if num(hb) and num(mq):
        out.append(f"On one CPU hbroker used {hb * 100:.0f} % of a core at that rate "
                   f"(Mosquitto {mq * 100:.0f} %).")
    idle = med.get("idle", {})
    h, m = idle.get("hbroker", {}), idle.get("mosquitto", {})
    if num(h.get("rss_per_1000_mb")):
        out.append(f"{fmt(h.get('connections'))} idle connections cost hbroker "
                   f"{h['rss_per_1000_mb']:.2f} MB per 1,000"
                   + (f" (Mosquitto {m['rss_per_1000_mb']:.2f} MB)"
                      if num(m.get("rss_per_1000_mb")) else "") + ".")
    return " ".join(out)


def storage_bound(report: dict[str, Any], scenario: str) -> dict[str, float]:
    """storage_qos1.py's client-bound configurations of a scenario (its bound_runs)."""
    from benchlib import CLIENT_BOUND

    threshold = report["plan"].get("client_bound", CLIENT_BOUND)
    return client_bound(report["summary"]["medians"].get(scenario, {}), threshold)


def storage_sentence(report: dict[str, Any]) -> str:
    ratios = report["summary"]["ratios"]
    parts = []
    for scenario, what in (("durable", "one publisher"), ("durable-4", "4 publisher/subscriber "
                                                                       "pairs")):
        r = ratios.get(scenario, {})
        got = [f"{r[c]:.2f}× with {label}" for c, label in
               (("sqlite-sync-nofsync", "`fsync = false` (the default)"),
                ("sqlite-sync", "`fsync = true`")) if num(r.get(c))]
        if got:
            flag = ""
            kinds = {c for c in ("sqlite-sync-nofsync", "sqlite-sync", "memory")
                     if c in storage_bound(report, scenario)}
            if kinds:
                flag = " (client-bound: " + ", ".join(sorted(kinds)) + "; see RESULTS.md)"
            parts.append(f"{' and '.join(got)}, {what}{flag}")
    if not parts:
        return ""
    return ("Durable storage (`bench/storage_qos1.py`, the same commit): QoS 1 to a persistent "
            "session with SQLite in `sync` mode reached, as a share of the memory backend's "
            "rate, " + "; ".join(parts) + ".")


def micro_sentence(report: dict[str, Any]) -> str:
    by_name = {b["name"]: b for b in report.get("benchmarks", [])}
    parts = []
    for name, what in (
            ("test_subscription_match[hit]", "subscription matching takes {} per topic among "
                                             "100,000 subscriptions"),
            ("test_decode_publish[framer-qos0-5.0]", "decoding a 5.0 PUBLISH through the "
                                                     "framer {}"),
            ("test_publish_path[5-0-1]", "the broker's own work for a QoS 0 message one to one "
                                         "(framing, routing, output) {}")):
        b = by_name.get(name)
        if b is None:
            continue
        items = b.get("extra_info", {}).get("items") or 1
        parts.append(what.format(fmt_time(b["stats"]["median"] / items)))
    if not parts:
        return ""
    return ("Micro-benchmarks (`bench/micro`, medians, the same commit): "
            + "; ".join(parts) + ".")


def block(results: dict[str, dict[str, Any] | None], root: Path = ROOT) -> str:
    """The Markdown between BEGIN and END for these results."""
    compare = results.get("compare")
    if compare is None:
        return ("No benchmark results yet: `make bench` writes them (bench/results/) and this "
                "section.")
    reasons = unfit(compare, root)
    if reasons:
        return (f"The benchmark results in `bench/results/{FILES['compare']}` are not from a "
                f"clean run ({'; '.join(reasons)}), so none are quoted here; `make bench` "
                "writes this section.")
    commit = full_commit(report_provenance(compare)["commit"], root)
    m, plan = compare["machine"], compare["plan"]
    reps = plan["repeats"]
    lines = [
        f"Measured by `bench/compare.py` (`make bench`) on {compare['date']}, commit "
        f"`{short(commit or '')}`, on {m['cpu_count']} CPUs ({m['cpu_model']}, "
        f"{m['memory_gb']:.0f} GB, {m['platform']}): hbroker and "
        f"{(m.get('mosquitto') or 'Mosquitto').replace('mosquitto version', 'Mosquitto')} "
        "alternating in the same run, medians of "
        f"{reps} repetition{'s' if reps != 1 else ''}; ratios are hbroker ÷ Mosquitto. "
        "[bench/RESULTS.md](bench/RESULTS.md) has every repetition's range, how the runs were "
        "made and [the chart](bench/results/compare.png). On a shared virtual machine single "
        "numbers move from run to run; the ratios compare runs made seconds apart.",
        "",
        *headline(compare),
        "",
        client_bound_sentence(compare),
    ]
    prose = [relay_sentence(compare), latency_sentence(compare)]
    left_out = []
    for key, sentence in (("storage", storage_sentence), ("micro", micro_sentence)):
        other = results.get(key)
        if other is None:
            left_out.append(f"`{FILES[key]}` is missing")
            continue
        why = unfit(other, root)
        theirs = full_commit(report_provenance(other)["commit"], root)
        if not why and theirs != commit:
            why = [f"it measured commit {short(theirs or '?')}, not {short(commit or '')}"]
        if why:
            left_out.append(f"`{FILES[key]}`: {'; '.join(why)}")
            continue
        prose.append(sentence(other))
    lines += ["", " ".join(p for p in prose if p)]
    if left_out:
        lines += ["", "Not quoted here, because their results are not from this run: "
                  + "; ".join(left_out) + " (the next `make bench` writes them)."]
    return "\n".join(lines)


def replace_block(text: str, body: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise BenchError(f"README.md has no block {BEGIN} … {END} in its Performance section")
    return text[:start] + f"{BEGIN}\n{NOTE}\n\n{body.strip()}\n\n" + text[end:]


def readme_after_run() -> int:
    """After a script wrote the committed results: rewrite the README block from them; 1 (and
    why, on stderr) when it cannot."""
    try:
        update()
    except BenchError as exc:
        print(f"README not updated: {exc}", file=sys.stderr)
        return 1
    return 0


def update(root: Path = ROOT, check: bool = False) -> bool:
    """Rewrites the block of root/README.md from root/bench/results; True if it changed.
    With `check`, writes nothing."""
    readme = root / "README.md"
    text = readme.read_text()
    new = replace_block(text, block(load(root / "bench" / "results"), root))
    if new == text or check:
        return new != text
    check_outputs([readme], provenance(root), root=root)
    tmp = readme.with_name(".README.md.tmp")
    tmp.write_text(new)
    tmp.replace(readme)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the README's block differs from the "
                             "results")
    args = parser.parse_args()
    try:
        changed = update(check=args.check)
    except BenchError as exc:
        print(f"readme.py: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if changed:
            print("README.md's Performance block differs from bench/results/ "
                  "(bench/readme.py rewrites it)", file=sys.stderr)
        return 1 if changed else 0
    print("README.md: Performance block " + ("rewritten" if changed else "unchanged"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
