"""The command line in process: global options on either side of the command, and warnings
of a few told one by one (the rest, through the real `syncd`, bash and groff, in
tests/acceptance/test_cli.py)."""

from __future__ import annotations

from syncd import cli
from syncd import config as config_module


def test_global_options_before_or_after_the_command():
    parse = cli.build_parser().parse_args
    for argv in (
        ["--log-level", "debug", "--log-format", "text", "--config", "x.yaml", "status"],
        ["status", "--log-level", "debug", "--log-format", "text", "--config", "x.yaml"],
        ["--log-format", "text", "status", "-c", "x.yaml", "--log-level", "debug"],
    ):
        args = parse(argv)
        assert (args.log_level, args.log_format, args.config) == ("debug", "text", "x.yaml")
    args = parse(["status"])
    assert (args.log_level, args.log_format, args.config) == (None, "json", None)
    assert parse(["config", "print", "--config", "y.yaml"]).config == "y.yaml"


def test_alike_warnings_of_a_few_are_told_one_by_one():
    notices = [
        config_module.Notice(
            sid, "password_file {} is readable by every user", f"/p/{sid}", "source"
        )
        for sid in ("a", "b")
    ] + [config_module.Notice("http.token_file", "{} is readable by every user", "/t")]
    assert config_module.summarize(notices) == [
        "source a: password_file /p/a is readable by every user",
        "source b: password_file /p/b is readable by every user",
        "http.token_file: /t is readable by every user",
    ]
    same = [
        config_module.Notice(str(i), "dsn: sslrootcert {} not found", "/ca.pem", "source")
        for i in range(5)
    ]
    assert config_module.summarize(same) == [  # one path for all: it is named
        "5 sources (0, 1, 2 and 2 more): dsn: sslrootcert /ca.pem not found"
    ]
