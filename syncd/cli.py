"""Argument parsing only: each command calls one function (in syncd.commands; `run` in
syncd.service.daemon, `demo` in the lab).

The global options (--config, --log-level, --log-format, --version) are taken before or after
the command name: `syncd --log-level debug run` and `syncd run --log-level debug` are one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from syncd import __version__
from syncd import config as config_module
from syncd.config import ConfigError
from syncd.config.credentials import SYNCD_ENV
from syncd.exitstatus import EXIT_CONFIG, SUMMARY, exit_status
from syncd.service.runtime import CONFIG_VARIABLE, DEFAULT_CONFIG, load_config, run_async

MAN_SECTIONS = {
    "FILES": f"""{DEFAULT_CONFIG}: the config, unless --config or ${CONFIG_VARIABLE} names
    another (config/syncd.example.yaml in the source is a complete example).""",
    "ENVIRONMENT": f"""{CONFIG_VARIABLE}: the config file, when --config is not given.

    OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL (grpc or http/protobuf),
    OTEL_SERVICE_NAME (default syncd): where traces go; none: nowhere.

    PGPASSWORD, PGSSLMODE and libpq's other variables, as asyncpg reads them.""",
    "EXIT STATUS": SUMMARY,
    "SEE ALSO": "The documentation in syncd's source: docs/ (mkdocs build), docs/reference/cli.md for this page's content.",
}


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
    from syncd.commands.once import MetricsOutput, run_once
    from syncd.observe.report import config_error_document, dumps
    from syncd.service.differ import start_differ

    def config_error(problems: list[str]) -> None:
        if args.json:  # stdout carries one document whatever happens; stderr the same lines
            print(dumps(config_error_document(problems)), flush=True)

    try:
        config = config_module.select(
            load_config(args.config, args.credentials_dir), args.source or [], args.dataset or []
        )
        start_differ(config.differ)
    except ConfigError as exc:
        config_error([str(p) for p in exc.problems])
        raise
    output = MetricsOutput(args.metrics_textfile, args.metrics_pushgateway)
    return traced(
        lambda: run_async(run_once, config, sys.stdout, sys.stderr, output, None, args.json),
        config_error,
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    from syncd.commands.config import check_config

    return check_config(args.config, args.credentials_dir)


def cmd_config_print(args: argparse.Namespace) -> int:
    from syncd.commands.config import print_config

    return print_config(args.config, args.credentials_dir)


def cmd_status(args: argparse.Namespace) -> int:
    from syncd.commands.status import run_status

    config = load_config(args.config, args.credentials_dir)
    return run_async(run_status, config, sys.stdout, sys.stderr, args.late, args.json)


def cmd_trigger(args: argparse.Namespace) -> int:
    from syncd.commands.trigger import run_trigger

    return run_trigger(load_config(args.config, args.credentials_dir), args.ids, args.token_file)


def cmd_verify(args: argparse.Namespace) -> int:
    from syncd.commands.verify import run_verify

    config = config_module.select(
        load_config(args.config, args.credentials_dir), args.source or [], args.dataset or []
    )
    return run_async(run_verify, config)


def cmd_run(args: argparse.Namespace) -> int:
    from syncd.service.daemon import run_daemon

    return traced(lambda: run_daemon(args.config, args.credentials_dir))


def cmd_check(args: argparse.Namespace) -> int:
    if not args.online:
        return cmd_check_config(args)  # offline, the only other kind of check
    from syncd.commands.check import run_check

    config = load_config(args.config, args.credentials_dir)
    if args.timeout is None:
        return run_async(run_check, config, sys.stdout, args.json)
    return run_async(run_check, config, sys.stdout, args.json, args.timeout)


def cmd_reload(args: argparse.Namespace) -> int:
    from syncd.commands.reload import reload
    from syncd.service.reloadstate import state_dir

    return reload(args.pid, state_dir(args.state_dir), args.timeout)


def cmd_tunnel_enroll(args: argparse.Namespace) -> int:
    from syncd.commands.enroll import enroll

    return enroll(
        load_config(args.config),
        args.id,
        sys.stdout,
        bastion_name=args.bastion,
        public_key=args.public_key,
        **{k: getattr(args, k) for k in ("user", "database", "db_host", "db_port", "address")},
    )


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


def cmd_completion(args: argparse.Namespace) -> int:
    from syncd.commands.clidoc import bash_completion

    sys.stdout.write(bash_completion(build_parser()))
    return 0


def cmd_man(args: argparse.Namespace) -> int:
    from syncd.commands.clidoc import man_page

    sys.stdout.write(man_page(build_parser(), __version__, MAN_SECTIONS))
    return 0


def listen_address(text: str) -> str:
    """argparse type for HOST:PORT."""
    if config_module.parse_listen(text) is None:
        example = config_module.Http().listen
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (like {example})")
    return text.strip()


def global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """On the top parser with their defaults; on each command again with none (SUPPRESS), so
    that given after the command they count, and not given there they leave the top's."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--log-level",
        default=default(None),
        choices=["debug", "info", "warning", "error"],
        help="default: info (warning for `once` on a terminal)",
    )
    parser.add_argument(
        "--log-format",
        default=default("json"),
        choices=["json", "text"],
        help="log lines on stderr: json (default, with trace ids) or text",
    )
    parser.add_argument(
        "--version", action="version", version=f"syncd {__version__}", help="print the version"
    )


def with_config(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=None if top else argparse.SUPPRESS,
        metavar="FILE",
        help=f"the YAML config (default: ${CONFIG_VARIABLE}, else {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        default=None if top else argparse.SUPPRESS,
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
    global_options(parser, top=True)
    with_config(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(
        name: str, help: str, func: Callable[[argparse.Namespace], int], *, config: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=exit_status(name))
        global_options(p, top=False)
        if config:
            with_config(p)
        p.set_defaults(func=func)
        return p

    command("run", "the daemon, in the foreground (systemd runs it)", cmd_run)

    p = command("once", "one pass over the selection, then a summary", cmd_once)
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
        help="instead of the table, one JSON document of the pass on stdout (schema: docs/reference/once-json.schema.json)",
    )

    command("check-config", "validate the config offline", cmd_check_config)

    p = command(
        "check",
        "with --online: ask every source and the destination what a sync would meet",
        cmd_check,
    )
    p.add_argument(
        "--online", action="store_true", help="connect (without it: the same as check-config)"
    )
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    p.add_argument(
        # its default is the check's own (syncd.commands.check), not loaded for every command
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="how long each check may take",
    )

    p = command(
        "status", "per municipality and dataset: last success, age, rows, error", cmd_status
    )
    p.add_argument(
        "--late",
        action="store_true",
        help="only municipalities with a dataset never synced or last synced over 48 h ago",
    )
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")

    p = command(
        "verify",
        "compare each municipality's destination rows with its source, writing nothing",
        cmd_verify,
    )
    p.add_argument("--source", action="append", metavar="ID", help="only this source (repeat)")
    p.add_argument("--dataset", action="append", metavar="NAME", help="only this dataset (repeat)")

    p = command(
        "trigger",
        "ask the running daemon to sync these sources now (POST /sources/{id}/sync)",
        cmd_trigger,
    )
    p.add_argument("ids", nargs="+", metavar="ID", help="a source id")
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="the bearer token (default: the config's http.token_file)",
    )

    p = command("config", "the effective config (config print)", cmd_config_print, config=False)
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="command")
    c = config_sub.add_parser(
        "print", help="the effective config as YAML: defaults filled in, secrets redacted"
    )
    c.epilog = exit_status("config print")
    global_options(c, top=False)
    with_config(c)
    c.set_defaults(func=cmd_config_print)

    p = command(
        "reload",
        "SIGHUP to the daemon, then wait until it has applied or rejected the config "
        "(ExecReload= on systemd 252)",
        cmd_reload,
        config=False,
    )
    p.add_argument("--pid", type=int, required=True, help="the daemon's pid ($MAINPID)")
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="where the daemon acknowledges reloads (default: $RUNTIME_DIRECTORY)",
    )
    p.add_argument("--timeout", type=float, default=90.0, metavar="SECONDS")

    p = command(
        "tunnel",
        "reverse tunnels for municipalities that can only dial out",
        cmd_tunnel_enroll,
        config=False,
    )
    tunnel = p.add_subparsers(dest="tunnel_command", required=True, metavar="command")
    t = tunnel.add_parser(
        "enroll",
        help="allocate a municipality's port on the rendezvous bastion; print its restricted "
        "authorized_keys line and its source entry",
        epilog=exit_status("tunnel enroll"),
    )
    global_options(t, top=False)
    with_config(t)
    t.add_argument("id", metavar="ID", help="the source id (e.g. the IBGE code)")
    t.add_argument("--public-key", type=Path, metavar="FILE", help="the municipality's .pub key")
    t.add_argument("--bastion", metavar="NAME", help="the rendezvous bastion (if several)")
    t.add_argument("--user", default="esus_leitura", help="the DSN's role (default esus_leitura)")
    t.add_argument("--database", default="esus", help="the DSN's database (default esus)")
    t.add_argument("--db-host", default="127.0.0.1", metavar="HOST", help="where the "
                   "municipal server reaches its database (default 127.0.0.1, the PEC's)")  # fmt: skip
    t.add_argument("--db-port", type=int, default=5433, metavar="PORT", help="its port "
                   "(default 5433, the PEC's bundled PostgreSQL, Linux and Windows)")  # fmt: skip
    t.add_argument("--address", metavar="HOST[:PORT]", help="the rendezvous host as "
                   "municipalities dial it (default: the bastion's host and port)")  # fmt: skip
    t.set_defaults(func=cmd_tunnel_enroll)

    p = command(
        "demo",
        "embedded PostgreSQL, synthetic municipalities, the daemon",
        cmd_demo,
        config=False,
    )
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

    p = command(
        "completion", "shell completion, generated from this parser", cmd_completion, config=False
    )
    p.add_argument("shell", choices=["bash"], help="the shell to complete for")
    command("man", "the man page (roff), generated from this parser", cmd_man, config=False)
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


def entry() -> NoReturn:
    """The `syncd` command: `main`, then out at once. Everything syncd writes is flushed (the
    telemetry is shut down by the command itself, the log handlers and the standard streams
    here), so the interpreter's own teardown, freeing every module and object one by one
    (about 0.1 s, a tenth of a small `once`), is skipped."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away, a closed stream
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
