"""Argument parsing only: each command calls one function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from syncd import config as config_module
from syncd.config import ConfigError
from syncd.config.credentials import SYNCD_ENV
from syncd.config.dsn import world_readable
from syncd.safetext import printable
from syncd.service.runtime import EXIT_CONFIG, load_config, run_async


def cmd_check_config(args: argparse.Namespace) -> int:
    # a missing credential is an error here whenever there is a credentials directory
    config = config_module.load(args.config, args.credentials_dir, strict_credentials=True)
    for warning in config.warnings:
        print(f"warning: {printable(warning)}", file=sys.stderr)
    for path, key in _secret_files(config):
        if not path.exists():  # inside the service, loading the config refused it already
            print(
                f"warning: {key}: {path} does not exist here (fine if only the service "
                "sees it, e.g. a systemd credential)",
                file=sys.stderr,
            )
        elif world_readable(path):
            print(f"warning: {key}: {path} is readable by every user", file=sys.stderr)
    print(f"{args.config}: ok ({len(config.sources)} sources, {len(config.datasets)} datasets)")
    return 0


def _secret_files(config: config_module.Config) -> list[tuple[Path, str]]:
    files = []
    if config.destination.password_file:
        files.append((config.destination.password_file, "destination.password_file"))
    if config.http.token_file:
        files.append((config.http.token_file, "http.token_file"))
    files += [
        (s.password_file, f"source {s.id} password_file") for s in config.sources if s.password_file
    ]
    return files


def traced(
    command: Callable[[], int], on_config_error: Callable[[list[str]], None] | None = None
) -> int:
    """Run a command with tracing set up from OTEL_*; spans are flushed on every exit."""
    from syncd.observe import telemetry

    try:
        tel = telemetry.setup()
    except telemetry.TelemetryError as exc:
        print(str(exc), file=sys.stderr)
        if on_config_error is not None:
            on_config_error([str(exc)])
        return EXIT_CONFIG
    try:
        return command()
    finally:
        tel.shutdown()


def cmd_once(args: argparse.Namespace) -> int:
    from syncd.observe.report import config_error_document, dumps
    from syncd.service.once import MetricsOutput, run_once

    def config_error(problems: list[str]) -> None:
        if args.json:  # stdout carries one document whatever happens; stderr the same lines
            print(dumps(config_error_document(problems)), flush=True)

    try:
        config = config_module.select(
            load_config(args.config, args.credentials_dir), args.source or [], args.dataset or []
        )
    except ConfigError as exc:
        config_error([str(p) for p in exc.problems])
        raise
    output = MetricsOutput(args.metrics_textfile, args.metrics_pushgateway)
    return traced(
        lambda: run_async(run_once, config, sys.stdout, sys.stderr, output, None, args.json),
        config_error,
    )


def cmd_status(args: argparse.Namespace) -> int:
    from syncd.service.statuscmd import run_status

    return run_async(run_status, load_config(args.config, args.credentials_dir))


def cmd_run(args: argparse.Namespace) -> int:
    from syncd.service.daemon import run_daemon

    return traced(lambda: run_daemon(args.config, args.credentials_dir))


def cmd_check(args: argparse.Namespace) -> int:
    if not args.online:
        return cmd_check_config(args)  # offline, the only other kind of check
    from syncd.service.check import run_check

    config = load_config(args.config, args.credentials_dir)
    if args.timeout is None:
        return run_async(run_check, config, sys.stdout, args.json)
    return run_async(run_check, config, sys.stdout, args.json, args.timeout)


def cmd_reload(args: argparse.Namespace) -> int:
    from syncd.service.reload import reload, state_dir

    return reload(args.pid, state_dir(args.state_dir), args.timeout)


def cmd_demo(args: argparse.Namespace) -> int:
    from syncd.lab.demo import DemoError, run_demo
    from syncd.lab.embedded import EmbeddedPostgresError

    try:
        return traced(
            lambda: run_demo(
                once=args.once,
                data_dir=args.data_dir,
                listen=args.listen,
                **{k: v for k in ("municipalities", "citizens") if (v := getattr(args, k))},
            )
        )
    except (EmbeddedPostgresError, DemoError) as exc:
        print(f"syncd demo: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the machine, not syncd: one line, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"syncd demo: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


def listen_address(text: str) -> str:
    """argparse type for HOST:PORT."""
    if config_module.parse_listen(text) is None:
        example = config_module.Http().listen
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (like {example})")
    return text.strip()


def with_credentials(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--credentials-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the secrets the config names no file for: DIR/analytics, DIR/http-token, "
        f"DIR/municipios/<id> (e.g. /etc/syncd/credentials; default: ${SYNCD_ENV}, or "
        "systemd's $CREDENTIALS_DIRECTORY inside the unit)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep a central analytical PostgreSQL fed from municipal e-SUS APS PEC databases.",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="default: info (warning for `once` on a terminal)",
    )
    parser.add_argument(
        "--log-format",
        default="json",
        choices=["json", "text"],
        help="log lines on stderr: json (default, with trace ids) or text",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", required=True, metavar="FILE", help="the YAML config")
        with_credentials(p)

    p = sub.add_parser("run", help="the daemon, in the foreground (systemd runs it)")
    with_config(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("once", help="one pass over the selection, then a summary")
    with_config(p)
    p.add_argument("--source", action="append", metavar="ID", help="only this source (repeatable)")
    p.add_argument(
        "--dataset", action="append", metavar="NAME", help="only this dataset (repeatable)"
    )
    p.add_argument(
        "--metrics-textfile",
        metavar="FILE",
        help="write the pass's metrics here (node_exporter textfile collector)",
    )
    p.add_argument(
        "--metrics-pushgateway",
        metavar="URL",
        help="push the pass's metrics to this Prometheus Pushgateway",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="instead of the table, one JSON document of the pass on stdout (schema: README)",
    )
    p.set_defaults(func=cmd_once)

    p = sub.add_parser("check-config", help="validate the config offline")
    with_config(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "check",
        help="with --online: ask every source and the destination what a sync would meet",
    )
    with_config(p)
    p.add_argument(
        "--online", action="store_true", help="connect (without it: the same as check-config)"
    )
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    p.add_argument(
        # its default is the check's own (syncd.service.check), not loaded for every command
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="how long each check may take",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "status", help="per municipality and dataset: last success, age, rows, error"
    )
    with_config(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "reload",
        help="SIGHUP to the daemon, then wait until it has applied or rejected the config "
        "(ExecReload= on systemd 252)",
    )
    p.add_argument("--pid", type=int, required=True, help="the daemon's pid ($MAINPID)")
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="where the daemon acknowledges reloads (default: $RUNTIME_DIRECTORY)",
    )
    p.add_argument("--timeout", type=float, default=90.0, metavar="SECONDS")
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("demo", help="embedded PostgreSQL, synthetic municipalities, the daemon")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="where the demo's PostgreSQL lives (default: a new temporary directory)",
    )
    p.add_argument(
        "--listen",
        type=listen_address,
        default=config_module.Http().listen,
        metavar="HOST:PORT",
        help=f"the daemon's HTTP endpoint (default {config_module.Http().listen})",
    )
    # their defaults are the demo's own (syncd.lab.demo), not loaded for every command
    p.add_argument("--municipalities", type=int, metavar="N", help="how many to make up")
    p.add_argument("--citizens", type=int, metavar="N", help="citizens per municipality")
    p.set_defaults(func=cmd_demo)
    return parser


def setup_logging(level: str | None, fmt: str, command: str) -> None:
    from syncd.observe.telemetry import setup_logging as setup

    if level is None:
        level = "warning" if command == "once" and sys.stderr.isatty() else "info"
    setup(level, fmt)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format, args.command)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
