"""What is derived from the argument parser: bash completion (`syncd completion bash`) and the
man page (`syncd man`, checked in as docs/syncd.1, which a test keeps current). Both walk the
parser `syncd.cli.build_parser` makes, so a new command or option appears in them by itself."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

FILE_METAVARS = {"FILE": "-f", "DIR": "-d"}


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # ("config", "print")
    parser: argparse.ArgumentParser
    help: str


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = (), help: str = ""
) -> Iterator[Command]:
    """The parser and every command under it, depth first, in the order they were added."""
    yield Command(path, parser, help)
    sub = _subparsers(parser)
    if sub is None:
        return
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    for name, child in sub.choices.items():
        yield from commands(child, (*path, name), helps.get(name, ""))


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]


def _metavar(action: argparse.Action) -> str:
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    if isinstance(action.metavar, str):
        return action.metavar
    return action.dest.upper()


# ---- bash ----------------------------------------------------------------------------------


def bash_completion(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    func = "_" + prog.replace("-", "_")
    all_commands = list(commands(parser))
    paths = " | ".join(shlex.quote("/" + "/".join(c.path)) for c in all_commands if c.path)
    value_cases: dict[str, str] = {}
    for command in all_commands:
        for action in _options(command.parser):
            if action.nargs == 0:
                continue
            if action.choices is not None:
                choices = shlex.quote(" ".join(map(str, action.choices)))
                reply = f'COMPREPLY=($(compgen -W {choices} -- "$cur"))'
            elif isinstance(action.metavar, str) and action.metavar in FILE_METAVARS:
                reply = f'COMPREPLY=($(compgen {FILE_METAVARS[action.metavar]} -- "$cur"))'
            else:
                reply = "COMPREPLY=()"  # a value: nothing to offer
            for option in action.option_strings:
                value_cases.setdefault(option, reply)
    word_cases = []
    for command in all_commands:
        sub = _subparsers(command.parser)
        words = [o for a in _options(command.parser) for o in a.option_strings]
        for action in _positionals(command.parser):
            if action.choices is not None:
                words += map(str, action.choices)
        if sub is not None:
            words += list(sub.choices)
        key = shlex.quote("/" + "/".join(command.path)) if command.path else "''"
        word_cases.append(
            f'        {key}) COMPREPLY=($(compgen -W {shlex.quote(" ".join(words))} -- "$cur")) ;;'
        )
    values = "\n".join(f"        {o}) {r}; return ;;" for o, r in sorted(value_cases.items()))
    return f"""# bash completion for {prog}, generated from its argument parser: {prog} completion bash
# install: {prog} completion bash > /etc/bash_completion.d/{prog}   (or source it in ~/.bashrc)
{func}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local path="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "$path/${{COMP_WORDS[i]}}" in
            {paths}) path="$path/${{COMP_WORDS[i]}}" ;;
        esac
    done
    case "$prev" in
{values}
    esac
    case "$path" in
{chr(10).join(word_cases)}
    esac
}}
complete -o filenames -F {func} {prog}
"""


# ---- man -----------------------------------------------------------------------------------


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _synopsis(command: Command, prog: str, told: set[str]) -> str:
    """The command and its options; of the global ones (`told`), only --config."""
    parts = [f"\\fB{_roff(' '.join((prog, *command.path)))}\\fR"]
    for action in _options(command.parser):
        if set(action.option_strings) & told and "--config" not in action.option_strings:
            continue
        flag = f"\\fB{_roff(max(action.option_strings, key=len))}\\fR"
        shown = flag if action.nargs == 0 else f"{flag} \\fI{_roff(_metavar(action))}\\fR"
        if action.required:
            parts.append(shown)
        else:
            parts.append(f"[{shown}]")
    for action in _positionals(command.parser):
        name = f"\\fI{_roff(_metavar(action))}\\fR"
        parts.append(f"{name}..." if action.nargs in ("+", "*") else name)
    if _subparsers(command.parser) is not None:
        parts.append("\\fIcommand\\fR")
    return " ".join(parts)


def man_page(parser: argparse.ArgumentParser, version: str, sections: dict[str, str]) -> str:
    """The man page in roff; `sections` adds titled prose (FILES, ENVIRONMENT, EXIT STATUS)."""
    prog = parser.prog
    out = [
        f'.\\" generated from the argument parser by `{prog} man`: do not edit',
        f'.TH {prog.upper()} 1 "" "{prog} {version}" "{prog} manual"',
        ".SH NAME",
        f"{prog} \\- {_roff(parser.description or '')}",
        ".SH SYNOPSIS",
    ]
    global_options = {o for a in _options(parser) for o in a.option_strings}
    listed = [c for c in commands(parser) if c.path and _subparsers(c.parser) is None]
    out.append(f"\\fB{prog}\\fR [\\fIglobal options\\fR] \\fIcommand\\fR [\\fIoptions\\fR]")
    for command in listed:
        out += [".br", _synopsis(command, prog, global_options)]
    out += [".SH GLOBAL OPTIONS", "Given before or after the command."]
    out += _option_items(parser, set())
    out.append(".SH COMMANDS")
    for command in listed:
        out += [f'.SS "{" ".join((prog, *command.path))}"', _roff(command.help)]
        out += _option_items(command.parser, global_options)
    for title, text in sections.items():
        out += [f".SH {title}", *(_paragraphs(text))]
    return "\n".join(out) + "\n"


def _option_items(parser: argparse.ArgumentParser, told: set[str]) -> list[str]:
    """Options and arguments as roff items; those in `told` (the global ones) are left out."""
    items = []
    for action in _options(parser):
        if set(action.option_strings) & told:
            continue
        names = ", ".join(f"\\fB{_roff(o)}\\fR" for o in action.option_strings)
        value = "" if action.nargs == 0 else f" \\fI{_roff(_metavar(action))}\\fR"
        items += [".TP", names + value, _roff(action.help or "")]
    for action in _positionals(parser):
        items += [".TP", f"\\fI{_roff(_metavar(action))}\\fR", _roff(action.help or "")]
    return items


def _paragraphs(text: str) -> list[str]:
    out = []
    for block in text.strip().split("\n\n"):
        out += [".PP", _roff(" ".join(block.split()))]
    return out
