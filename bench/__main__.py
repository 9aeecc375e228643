"""`make bench`: numbers and ratios, never pass/fail.

python -m bench [--only single|landing|delta|many|latency|tracing|incremental|brasil|bastion|
                        compression|rss|soak]
                [--rows N] [--delta-rows N] [--rounds N] [--municipalities N] [--soak-minutes M]

Everything by default, the half-hour soak last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from syncd.lab import embedded

from . import (
    bastion,
    brasil,
    compression,
    delta,
    incremental,
    landing,
    latency,
    many,
    rss,
    single_table,
    soak,
    tracing,
)
from .common import BENCH_SETTINGS, LOOPBACKS, ROOT, Clusters, median, table

LISTA = str(ROOT / "config" / "listas" / "hipertensos.sql")


def _which_syncd(installed: bool) -> dict:
    """The syncd the benchmarks run (`python -m syncd` in the same environment): where it is
    imported from, and which row differ it runs."""
    import syncd
    from syncd.engine import rowdiff

    where = Path(syncd.__file__).resolve().parent
    in_tree = where.is_relative_to(ROOT / "syncd")  # the clone's package, not an install
    differ = rowdiff.current()
    found = {
        "version": syncd.__version__,
        "path": str(where),
        "installed": not in_tree,
        "differ": differ.name,
        "describe": f"{syncd.__version__} from {where} "
        f"({'this tree' if in_tree else 'installed'}), {differ.describe()}",
    }
    if installed and (in_tree or not differ.compiled):
        raise SystemExit(f"not the installed wheel with its compiled differ: {found['describe']}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "--only",
        choices=[
            "single",
            "landing",
            "delta",
            "many",
            "latency",
            "tracing",
            "incremental",
            "brasil",
            "bastion",
            "compression",
            "rss",
            "soak",
        ],
    )
    parser.add_argument(
        "--brasil", default="100,1000,5570", help="municipality counts for (e), comma-separated"
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument(
        "--delta-rows", type=int, default=300_000, help="rows of (l)'s table behind the link"
    )
    parser.add_argument("--link-mbit", type=float, default=20.0, help="(l)'s link, each way")
    parser.add_argument("--link-rtt-ms", type=float, default=60.0, help="(l)'s round trip")
    parser.add_argument(
        "--installed",
        action="store_true",
        help="refuse unless syncd is an installed package (not this tree) with its compiled "
        "differ: what `make bench` runs",
    )
    parser.add_argument("--soak-minutes", type=float, default=30.0)
    parser.add_argument("--soak-municipalities", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--municipalities", type=int, default=650)
    parser.add_argument("--citizens", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--incremental-citizens",
        type=int,
        default=5000,
        help="citizens per municipality in (d): consultations are 3x",
    )
    args = parser.parse_args()

    results: dict = {
        "machine": f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}",
        "syncd": _which_syncd(args.installed),
    }
    lines = [f"machine: {results['machine']}", f"syncd: {results['syncd']['describe']}"]
    if args.only in (None, "single"):
        with _clusters("syncd-bench-single-") as clusters:
            r = single_table.run(clusters, args.rows, args.rounds)
        results["single_table"] = r
        lines += [
            "",
            "(a) one PEC-shaped table, syncd once vs the psql binary COPY pipe",
            table(
                ["rows", "size", "psql pipe (median)", "syncd once (median)", "ratio"],
                [
                    [
                        f"{r['rows']:,}",
                        f"{r['bytes'] / 1e6:.0f} MB",
                        f"{r['pipe_median_s']:.2f} s",
                        f"{r['syncd_median_s']:.2f} s",
                        f"{r['ratio']:.2f}x",
                    ]
                ],
            ),
            f"runs: pipe {_list(r['pipe_s'])}; syncd {_list(r['syncd_s'])}",
        ]
    if args.only in (None, "landing"):
        with _clusters("syncd-bench-landing-") as clusters:
            r = landing.run(clusters, args.rows, args.rounds)
        results["landing"] = r
        lines += ["", *landing_report(r)]
    if args.only in (None, "delta"):
        with _clusters("syncd-bench-delta-") as clusters:
            r = delta.run(
                clusters,
                args.delta_rows,
                min(args.rounds, 2),
                args.link_mbit,
                args.link_rtt_ms / 1000,
            )
        results["delta"] = r
        lines += ["", *delta.report(r)]
    if args.only in (None, "many"):
        with _clusters("syncd-bench-many-", source_fast=True) as clusters:
            r = many.run(clusters, args.municipalities, args.citizens, args.concurrency, LISTA)
        results["many"] = r
        lines += [
            "",
            f"(b) {r['municipalities']} municipalities x {r['datasets']} datasets",
            table(
                [
                    "municipalities",
                    "concurrency",
                    "first pass",
                    "steady-state pass (~2% changed)",
                    "peak RSS",
                    "peak source connections",
                ],
                [
                    [
                        str(r["municipalities"]),
                        str(r["concurrency"]),
                        f"{r['wall_s']:.1f} s",
                        f"{r['steady_s']:.1f} s",
                        f"{r['peak_rss_mb']:.0f} MB",
                        str(r["peak_source_connections"]),
                    ]
                ],
            ),
            f"syncd: {r['summary']}",
        ]
    if args.only in (None, "latency"):
        with _clusters("syncd-bench-latency-", source_fast=True) as clusters:
            r = latency.run(
                clusters, min(args.municipalities, 200), args.citizens, args.concurrency, LISTA
            )
        results["latency"] = r
        lines += latency.report(r)
    if args.only in (None, "brasil"):
        points = [int(p) for p in args.brasil.split(",")]
        with _clusters("syncd-bench-brasil-", source_fast=True, dest_defaults=True) as clusters:
            r = brasil.run(clusters, points, args.concurrency)
        results["brasil"] = r
        lines += [
            "",
            f"(e) shared installations: {r['databases']} PEC databases, one source per "
            f"municipality (params), {r['citizens_each']} citizens each, 2 datasets",
            table(
                [
                    "municipalities",
                    "first pass",
                    "steady-state pass (~2% changed)",
                    "per municipality",
                    "peak RSS",
                ],
                [
                    [
                        f"{p['municipalities']:,}",
                        f"{p['first_s']:.1f} s",
                        f"{p['steady_s']:.1f} s",
                        f"{p['ms_per_municipality']:.1f} ms",
                        f"{p['peak_rss_mb']:.0f} MB",
                    ]
                    for p in r["curve"]
                ],
            ),
        ]
    if args.only in (None, "tracing"):
        count = min(args.municipalities, 200)
        with _clusters("syncd-bench-tracing-", source_fast=True) as clusters:
            r = tracing.run(
                clusters, count, args.citizens, args.concurrency, LISTA, max(args.rounds, 4)
            )
        results["tracing"] = r
        lines += [
            "",
            f"(c) tracing cost: {count} municipalities, spans exported over OTLP/HTTP "
            "to a local receiver vs no exporter",
            table(
                ["no exporter (median)", "exporting (median)", "overhead"],
                [
                    [
                        f"{r['off_median_s']:.2f} s",
                        f"{r['on_median_s']:.2f} s",
                        f"{r['overhead'] * 100:+.1f}%",
                    ]
                ],
            ),
            f"runs: off {_list(r['off_s'])}; on {_list(r['on_s'])}; "
            f"{r['export_requests']} export requests received",
        ]
    if args.only in (None, "incremental"):
        with _clusters("syncd-bench-incremental-", source_fast=True) as clusters:
            r = incremental.run(clusters, args.municipalities, args.incremental_citizens)
        results["incremental"] = r
        lines += [
            "",
            f"(d) incremental: {r['municipalities']} municipalities x "
            f"{r['rows_each']:,} consultations, then {r['new_rows_each']} new rows each (0.5%)",
            table(
                ["first full load", "incremental pass", "fraction"],
                [
                    [
                        f"{r['full_s']:.1f} s",
                        f"{r['incremental_s']:.1f} s",
                        f"{r['fraction'] * 100:.0f}%",
                    ]
                ],
            ),
            f"incremental passes over {r['grid_municipalities']} municipalities "
            "(consultations each, new rows each):",
            table(["case", "incremental pass"], [[k, f"{v:.2f} s"] for k, v in r["grid"].items()]),
        ]
    if args.only in (None, "bastion"):
        with _clusters("syncd-bench-bastion-", source_fast=True) as clusters:
            r = bastion.run(
                clusters,
                min(args.municipalities, 200),
                args.citizens,
                args.concurrency,
                LISTA,
                max(args.rounds, 4),
                channels=args.municipalities,
            )
        results["bastion"] = r
        lines += bastion.report(r)
    if args.only in (None, "compression"):  # bytes on the link, not times
        base = embedded.make_base_dir("syncd-bench-compression-")
        try:
            r = compression.run(base, 300_000)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        results["compression"] = r
        lines += ["", compression.report(r)]
    if args.only in (None, "rss"):
        with _clusters("syncd-bench-rss-") as clusters:
            r = rss.run(clusters, args.rows)
        results["rss"] = r
        lines += [
            "",
            f"(h) daemon memory: syncd run, concurrency.sources 32, {r['municipalities']} "
            f"municipalities, one of {r['big_rows']:,} rows",
            table(
                ["first pass (all new) peak RSS", "second pass (unchanged) peak RSS", "target"],
                [
                    [
                        f"{r['first_pass_peak_mb']:.0f} MB",
                        f"{r['second_pass_peak_mb']:.0f} MB",
                        "<= 300 MB",
                    ]
                ],
            ),
        ]
    if args.only in (None, "soak"):  # half an hour: `make bench` runs it last
        with _clusters("syncd-bench-soak-", source_fast=True) as clusters:
            r = soak.run(clusters, args.soak_minutes, args.soak_municipalities)
        results["soak"] = r
        lines += [
            "",
            f"(g) soak: syncd run for {r['minutes']:g} min, {r['municipalities']} municipalities x 2 "
            "datasets every 15 s, sources changing, ~10% of connections reset or stalled",
            table(
                ["result", "value"],
                [
                    ["verify at the end (exit 0: every dataset equal)", str(r["verify_exit"])],
                    ["verify", r["verify_tail"]],
                    ["ledger rows left running", str(r["ledger_running"])],
                    [
                        "dataset passes ok / failed or aborted",
                        f"{r['passes_ok']} / {r['passes_failed']}",
                    ],
                    [
                        "faults injected",
                        f"{r['faults']['resets']} resets, {r['faults']['stalls']} stalls",
                    ],
                    ["source changes", str(r["source_changes"])],
                    [
                        "RSS after warm-up / at the end / peak",
                        f"{r['rss_mb_after_warmup']:.0f} / {r['rss_mb_at_end']:.0f} / {r['rss_mb_peak']:.0f} MB",
                    ],
                    [
                        "open files after warm-up / at the end",
                        f"{r['fds_after_warmup']} / {r['fds_at_end']}",
                    ],
                    ["daemon exit code after SIGTERM", str(r["exit_code"])],
                ],
            ),
        ]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    (out / "latest.md").write_text(text + "\n")


def landing_report(r: dict) -> list[str]:
    mb, t, wal = 2**20, r["seconds"], r["wal_bytes"]

    def v2(ratio: float | None, unit: str) -> str:
        return "not measured (no git history)" if ratio is None else f"{ratio:.2f}x {unit}"

    rows = [
        [
            "nothing changed",
            f"{median(t['unchanged']):.2f} s",
            f"floor {median(t['floor']):.2f} s",
            f"{r['unchanged_vs_floor']:.2f}x",
            "<= 1.2x floor",
            v2(r["v2_vs_floor"], "floor (rewrites every row)"),
        ]
    ]
    for case, label in (("spread", "over the whole table"), ("recent", "among the newest tenth")):
        changed = f"~2% changed {label} ({median(r['changed_rows'][case]):,.0f} rows)"
        rows += [
            [
                changed,
                f"{median(t[case]):.2f} s",
                f"pipe {median(t['pipe']):.2f} s",
                f"{r['changed_vs_pipe'][case]:.2f}x",
                "<= 0.75x pipe",
                v2(r["v2_vs_pipe"], "pipe"),
            ],
            [
                "  its WAL",
                f"{median(wal[case]) / mb:.0f} MB",
                f"pipe {median(wal['pipe']) / mb:.0f} MB",
                f"{r['changed_wal_vs_pipe'][case] * 100:.0f}%",
                "<= 10% of the pipe's",
                "" if r["v2_wal_vs_pipe"] is None else f"{r['v2_wal_vs_pipe'] * 100:.0f}%",
            ],
        ]
    rows.append(
        [
            "first load",
            f"{median(t['first']):.2f} s",
            f"pipe {median(t['pipe']):.2f} s",
            f"{r['first_vs_pipe']:.2f}x",
            "<= 1.1x pipe",
            "",
        ]
    )
    return [
        f"(f) landing v3, one {r['rows']:,}-row table: syncd once (whole command) vs reading "
        "the table alone (the floor) and the psql binary pipe into a fresh table; landing v2 "
        f"({landing.V2_REV}) over the same rows in the same run",
        table(
            ["case", "syncd (median)", "baseline (median)", "ratio", "target", "landing v2"], rows
        ),
        "runs: "
        + "; ".join(f"{k} {_list(v)}" for k, v in t.items() if v)
        + f"; peak RSS {r['peak_rss_mb']:.0f} MB",
    ]


@contextlib.contextmanager
def _clusters(
    prefix: str, source_fast: bool = False, dest_defaults: bool = False
) -> Iterator[Clusters]:
    """A municipal and an analytical cluster for one benchmark, destroyed after it."""
    base = embedded.make_base_dir(prefix)
    bin_dir = embedded.wheel_bin_dir()
    source_settings = (
        {**embedded.FAST_SETTINGS, "listen_addresses": _loopbacks()}
        if source_fast
        else BENCH_SETTINGS
    )
    source = embedded.Cluster.create(bin_dir, base / "municipal", settings=source_settings)
    dest_settings = dict(BENCH_SETTINGS)
    if dest_defaults:  # as an analytics team gets it: PostgreSQL's connection and lock limits
        for key in ("max_connections", "max_locks_per_transaction"):
            dest_settings.pop(key)
    dest = embedded.Cluster.create(bin_dir, base / "analytics", settings=dest_settings)
    clusters = Clusters(source, dest, base)
    try:
        yield clusters
    finally:
        clusters.destroy()


def _loopbacks() -> str:
    return ",".join(f"127.0.0.{i}" for i in range(1, LOOPBACKS + 1))


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
