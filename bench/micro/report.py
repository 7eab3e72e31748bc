#!/usr/bin/env python3
"""Micro-benchmarks of the Cython seams (codec, topic tries): runs `bench/micro` under
pytest-benchmark and writes the section "## Micro-benchmarks" of `bench/RESULTS.md`.

    .venv/bin/python bench/micro/report.py [--quick] [-k EXPR] [--output JSON]
                                           [--markdown FILE] [--render JSON]

A full run (1 to 1.5 minutes) writes `bench/results/micro.json` (pytest-benchmark's JSON,
statistics without the raw rounds) and replaces the section in `bench/RESULTS.md`, keeping the
other sections, and then the Performance block of the top README (`bench/readme.py`); only
from a work tree without uncommitted changes to the code or the benchmarks, with the
extensions built from their sources. `--quick` is a smoke test: minimal rounds, the JSON in
the temporary directory, no Markdown unless `--markdown` is given (the section is printed).
`-k` selects benchmarks as pytest does, and then, like `--quick`, leaves the repository's
results alone; so does `--allow-dirty`, which runs with uncommitted changes. `--render JSON`
runs nothing and rewrites the section from a results file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import readme  # noqa: E402  (bench/readme.py: the README block)
from benchlib import (  # noqa: E402
    BenchError,
    check_outputs,
    check_render,
    fmt_time,
    provenance,
    provenance_banner,
    report_provenance,
    scratch_dir,
    settle,
    short,
    write_section,
)

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "bench" / "micro"
RESULTS_JSON = ROOT / "bench" / "results" / "micro.json"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
SECTION = "## Micro-benchmarks"

# pytest-benchmark settings. Rounds of at least 100 µs keep the timer's own cost (tens of ns
# per round) out of sub-microsecond results; the warm-up keeps a cold first call from setting
# the calls per round to 1; 2 s per benchmark keeps the whole run to 1-1.5 minutes.
WARMUP_OPTIONS = ["--benchmark-warmup=on", "--benchmark-warmup-iterations=20"]
FULL_OPTIONS = ["--benchmark-min-time=0.0001", "--benchmark-max-time=2",
                "--benchmark-min-rounds=5", *WARMUP_OPTIONS]
QUICK_OPTIONS = ["--benchmark-min-time=0.00002", "--benchmark-max-time=0.02",
                 "--benchmark-min-rounds=3", *WARMUP_OPTIONS]

# Report order of the pytest-benchmark groups, with a title and what the inputs are.
GROUPS: dict[str, tuple[str, str]] = {
    "decode": (
        "PUBLISH decode",
        "Topic `site/s42/d17/temperature`, 64-byte payload; in 5.0 two properties (Message "
        "Expiry Interval, Content Type). `Framer.feed` gets the one whole packet and returns "
        "it in a list; `decode` is the codec's lower-level entry point (one whole packet, no "
        "buffering). Fed the same packet again and again, the framer reuses the topic string "
        "and the decoded property block of the packet before (as with a device that repeats "
        "them); the last row gives it a different property block in every PUBLISH, and "
        "`decode` keeps nothing between calls.",
    ),
    "encode": (
        "PUBLISH and PUBACK encode",
        "The same PUBLISH. `set_packet_id` copies a PUBLISH encoded once per message with "
        "another packet id, as the broker does for each QoS 1 delivery.",
    ),
    "framer": (
        "Framer on 64 KiB reads",
        "One call is one read handed to `Framer.feed`; the packets are PUBLISHes of about 82 "
        "bytes (topics `site/s<a>/d<b>/m<c>`, 64-byte payload) and 4-byte PUBACKs. "
        "*Per item*: per packet decoded.",
    ),
    "subscriptions": (
        "Subscription trie (`SubscriptionTree`), 100,000 subscriptions",
        "45,000 exact filters `site/s<a>/d<b>/m<c>` subscribed by 2 clients each (90,000), "
        "9,800 with wildcards (`site/s/d/+`, `site/s/+/m`, `site/+/d/m`, `site/s/d/#`, "
        "`site/s/#`, `site/s/d/m/+`) and 200 shared (groups `$share/g<k>/site/s/#` of 2 to 4 "
        "members), from a seeded "
        "random generator over 500 sites × 50 devices × 20 metrics. One call runs over 1,000 "
        "different topics or filters; *per item* is per topic or filter. The subscribe and "
        "unsubscribe rows time fixed-size batches (`benchmark.pedantic`), each after an "
        "untimed setup that adds or removes the same filters.",
    ),
    "publish path": (
        "The broker's work per PUBLISH, in one process (`test_publish_path_micro.py`)",
        "A read of 15 PUBLISHes (topic `site/s42/d17/temperature`, 64-byte payload) through "
        "`Connection.data_received`: framing, `handle_publish`, the match cache, the fan-out "
        "into the subscribers' output and the broker's flush to fake transports (no sockets, "
        "no event loop). At QoS 1 the subscriber's 15 PUBACKs are fed back in the same call. "
        "*Per item*: per message published.",
    ),
    "harcp": (
        "HARCP frames (`hbroker_ext/harcp.pyx`, `hbroker/control/harcp.py`)",
        "One signed execute, the shared vector `execute_signed` (35-byte payload, 139 bytes "
        "signed); Ed25519 through pynacl (libsodium). *ops/s* of the first and fourth rows "
        "are frames/s; the share of Ed25519 follows the table.",
    ),
    "retained": (
        "Retained messages (`RetainedTree`), 100,000 topics",
        "Topics `site/s<a>/d<b>/m<c>`, 100 sites × 50 devices × 20 metrics. `get` runs over "
        "1,000 random topics per call; *per item* of `match` is per message returned.",
    ),
}


def fmt_count(n: float) -> str:
    return f"{n:,.0f}" if n >= 100 or n == int(n) else f"{n:,.1f}"


def machine_line(report: dict[str, Any]) -> str:
    m = report.get("machine_info", {})
    cpus = m.get("cpu_count") or m.get("cpu", {}).get("count") or "?"
    model = m.get("cpu_model") or m.get("cpu", {}).get("brand_raw") or m.get("processor", "")
    python = f"{m.get('python_implementation', 'Python')} {m.get('python_version', '?')}"
    cython = f", Cython {m['cython_version']}" if m.get("cython_version") else ""
    return (f"Machine: {cpus} CPUs{f' ({model})' if model else ''}, "
            f"{m.get('platform') or m.get('system', '')}; {python}{cython}.")


def share_lines(rows: list[dict[str, Any]]) -> list[str]:
    """For rows whose `extra_info` names the row they are `part_of`: their share of its
    median (the share of time in Ed25519 of the HARCP rows)."""
    medians = {b.get("extra_info", {}).get("label"): b["stats"]["median"] for b in rows}
    out = []
    for b in rows:
        info = b.get("extra_info", {})
        whole = medians.get(info.get("part_of"))
        if whole:
            out.append(f"- {info['label']}: {b['stats']['median'] / whole * 100:.0f} % of "
                       f"{info['part_of']}.")
    return [*out, ""] if out else []


def markdown(report: dict[str, Any], json_path: Path | None) -> str:
    when = datetime.fromisoformat(report["datetime"]).strftime("%Y-%m-%d %H:%M UTC")
    run = report.get("run", {})
    took = ""
    if "seconds" in run:
        took = (f" (took {run['seconds']:.0f} s)" if run["seconds"] < 120
                else f" (took {run['seconds'] / 60:.1f} min)")
    quick = " **Quick run (`--quick`): minimal rounds, numbers not meaningful.**" \
        if run.get("quick") else ""
    try:
        raw = f" Raw statistics: `{json_path.resolve().relative_to(ROOT)}`." if json_path else ""
    except ValueError:
        raw = f" Raw statistics: `{json_path}`."
    benches = report["benchmarks"]
    opts = benches[0]["options"] if benches else {}
    banner = provenance_banner(report)
    commit = short(report_provenance(report)["commit"])
    lines = [
        SECTION,
        "",
        *([banner, ""] if banner else []),
        f"Written by `bench/micro/report.py` on {when}{took}, measuring commit `{commit}`. "
        f"{machine_line(report)}{raw}{quick}",
        "",
        "Single calls of the Cython extensions on fixed, deterministic inputs "
        "(`bench/micro/`, see its README), timed by pytest-benchmark "
        f"{report.get('version', '')} with `time.{opts.get('timer', 'perf_counter')}`: "
        f"calls repeated in rounds of at least {fmt_time(opts.get('min_time', 0))}, rounds "
        f"for {opts.get('max_time', 0):g} s per benchmark (at least "
        f"{opts.get('min_rounds', '?')}){' after a warm-up' if opts.get('warmup') else ''}, "
        "garbage collector "
        f"{'off' if opts.get('disable_gc') else 'on'}. *Median*: median over the rounds of "
        "the time of one call; *ops/s*: calls per second at that median; *per item*: the "
        "median divided by the packets, topics or messages one call handles; *IQR*: "
        "interquartile range of the rounds, relative to the median; *min*: the fastest round "
        "(per call), what a quiet machine gives; *rounds × calls*: rounds and calls per "
        "round.",
        "",
    ]
    order = list(GROUPS) + sorted({b["group"] or "" for b in benches} - set(GROUPS))
    for group in order:
        rows = [b for b in benches if (b["group"] or "") == group]
        if not rows:
            continue
        title, note = GROUPS.get(group, (group or "other", ""))
        lines += [f"**{title}**" + (f". {note}" if note else ""), ""]
        lines += ["| benchmark | median | ops/s | per item | IQR | min | rounds × calls |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for b in rows:
            s = b["stats"]
            info = b.get("extra_info", {})
            median = s["median"]
            per_item = ""
            if info.get("items"):
                per_item = f"{fmt_time(median / info['items'])}/{info.get('item', 'item')}"
            lines.append(
                f"| {info.get('label', b['name'])} | {fmt_time(median)} | "
                f"{1 / median:,.0f} | {per_item} | {s['iqr'] / median * 100:.0f} % | "
                f"{fmt_time(s['min'])} | {s['rounds']:,} × {s['iterations']:,} |")
        lines.append("")
        lines += share_lines(rows)
    if run.get("other_cpu") is not None:
        lines += [f"Other processes used {run['other_cpu'] * 100:.0f} % of a CPU on average "
                  "while this ran (the benchmarks use one).", ""]
    return "\n".join(lines)


def busy_cpu_seconds() -> float | None:
    """CPU time spent by the whole machine since boot (Linux), to tell how busy it was."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_suite(output: Path, quick: bool,
              select: str | None) -> tuple[int, list[str], float, float | None]:
    json_arg = output.relative_to(ROOT) if output.is_relative_to(ROOT) else output
    cmd = [sys.executable, "-m", "pytest", str(SUITE.relative_to(ROOT)), "--benchmark-only",
           f"--benchmark-json={json_arg}", "-p", "no:cacheprovider", "-q",
           "--benchmark-columns=min,median,iqr,ops,rounds,iterations",
           *(QUICK_OPTIONS if quick else FULL_OPTIONS)]
    if select:
        cmd += ["-k", select]
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    started = time.monotonic()
    busy, own = busy_cpu_seconds(), children_cpu_seconds()
    code = subprocess.run(cmd, cwd=ROOT).returncode
    seconds = time.monotonic() - started
    busy_after = busy_cpu_seconds()
    others = None
    if busy is not None and busy_after is not None:
        others = max(0.0, (busy_after - busy) - (children_cpu_seconds() - own)) / seconds
    return code, cmd, seconds, others


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: minimal rounds, JSON in the temporary directory, "
                             "Markdown printed (written only with --markdown)")
    parser.add_argument("-k", dest="select", default=None, metavar="EXPR",
                        help="only the benchmarks pytest's -k selects (results written like "
                             "--quick)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results file (default bench/results/micro.json)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="Markdown file whose section is replaced (default "
                             "bench/RESULTS.md)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="run nothing: rewrite the section from a results file (the "
                             "committed RESULTS.md only from bench/results/micro.json)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="a local experiment: run although the code or the benchmarks "
                             "have uncommitted changes; results written like --quick")
    args = parser.parse_args()

    if args.render is not None:
        report = json.loads(args.render.read_text())
        md = args.markdown or RESULTS_MD
        try:
            check_render(args.render, RESULTS_JSON, [md], "--markdown")
        except BenchError as exc:
            print(f"report.py: {exc}", file=sys.stderr)
            return 2
        write_section(md, SECTION, markdown(report, args.render))
        return readme.readme_after_run() if Path(md).resolve() == RESULTS_MD else 0

    partial = args.quick or args.select is not None or args.allow_dirty
    quick_json = scratch_dir("hbroker-bench-micro-quick.json")
    output = (args.output or (quick_json if partial else RESULTS_JSON)).resolve()
    md_path = args.markdown or (None if partial else RESULTS_MD)
    start = provenance()
    try:
        # a partial run (-k) is as unfit for the committed results as a quick one
        check_outputs([output, md_path], start,
                      quick=args.quick or args.select is not None)
    except BenchError as exc:
        print(f"report.py: {exc}", file=sys.stderr)
        return 2
    if start.stale:
        print(f"warning: {', '.join(start.stale)} changed since the extensions were built; "
              "run `make build` first", file=sys.stderr)
    # pytest-benchmark writes the JSON itself: into the scratch file, moved once checked
    run_json = quick_json if output != quick_json else output
    run_json.parent.mkdir(parents=True, exist_ok=True)

    code, cmd, seconds, others = run_suite(run_json, args.quick, args.select)
    if code != 0:
        print(f"pytest exited with status {code}; nothing rendered", file=sys.stderr)
        return code
    prov = settle(start)
    status = 0
    try:
        check_outputs([output, md_path], prov, quick=args.quick)
    except BenchError as exc:  # the tree changed during the run: keep the results elsewhere
        print(f"report.py: {exc}", file=sys.stderr)
        output, md_path, status = quick_json, None, 1
    report = json.loads(run_json.read_text())
    report["provenance"] = prov.as_dict()
    report["run"] = {"seconds": round(seconds, 1), "quick": args.quick,
                     "other_cpu": None if others is None else round(others, 3),
                     "select": args.select, "stale_extensions": list(prov.stale),
                     "command": shlex.join(Path(c).name if c == sys.executable else c
                                           for c in cmd)}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n")
    if run_json != output:
        run_json.unlink(missing_ok=True)
    section = markdown(report, output)
    if md_path is not None:
        write_section(md_path, SECTION, section)
        print(f"wrote {output} and the section {SECTION!r} of {md_path}", file=sys.stderr)
    else:
        print(section)
        print(f"wrote {output}", file=sys.stderr)
    if md_path is not None and Path(md_path).resolve() == RESULTS_MD and output == RESULTS_JSON:
        status = readme.readme_after_run() or status
    return status


if __name__ == "__main__":
    sys.exit(main())
