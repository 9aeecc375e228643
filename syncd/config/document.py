"""YAML with line numbers: the parsed data plus the line of every key path, so that each
problem can name its line, and the text of every scalar YAML did not read as a string."""

from __future__ import annotations

from pathlib import Path

import yaml

from syncd.config.problem import Key, KeyPath, Problem, key_path

MAX_CONFIG_BYTES = 16 * 1024 * 1024


class Document:
    """A parsed YAML document plus the line of every key path."""

    def __init__(
        self,
        data: object,
        lines: dict[KeyPath, int],
        file: str,
        texts: dict[KeyPath, str] | None = None,
    ):
        self.data = data
        self.lines = lines
        self.file = file
        self.texts = texts or {}  # scalars YAML did not read as strings: what the file says

    def under(self, key: str) -> Document:
        """The same document seen as the value of `key` (a sources_file is `sources:`)."""
        return Document(
            self.data,
            {(key, *path): line for path, line in self.lines.items()},
            self.file,
            {(key, *path): text for path, text in self.texts.items()},
        )


def compose(text: str, file: str) -> Document:
    loader = yaml.SafeLoader(text)
    lines: dict[KeyPath, int] = {}
    texts: dict[KeyPath, str] = {}
    seen_nodes = 0

    def walk(node: yaml.Node, path: KeyPath) -> object:
        nonlocal seen_nodes
        seen_nodes += 1
        if seen_nodes > 200_000:  # aliases can make a small file expand without bound
            raise yaml.YAMLError("the document expands to too many values (alias bomb?)")
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            result: dict[Key, object] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float)):  # bool is an int
                    raise _KeyProblem(path, key_node.start_mark.line + 1, "keys must be plain text")
                if key in result:
                    raise _KeyProblem(path, key_node.start_mark.line + 1, f"duplicate key {key!r}")
                lines[(*path, key)] = key_node.start_mark.line + 1
                result[key] = walk(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [walk(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:str":
            texts[path] = node.value
        return loader.construct_object(node, deep=True)

    try:
        node = loader.get_single_node()
        data = None if node is None else walk(node, ())
    finally:
        loader.dispose()
    return Document(data, lines, file, texts)


class _KeyProblem(Exception):
    def __init__(self, path: KeyPath, line: int, message: str):
        self.path, self.line, self.message = path, line, message


def read_yaml(path: Path, problems: list[Problem]) -> Document | None:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            problems.append(
                Problem("", None, f"file is larger than {MAX_CONFIG_BYTES >> 20} MiB", str(path))
            )
            return None
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(Problem("", None, "file not found", str(path)))
        return None
    except IsADirectoryError:
        problems.append(Problem("", None, "is a directory, not a file", str(path)))
        return None
    except PermissionError:
        problems.append(Problem("", None, "permission denied", str(path)))
        return None
    except UnicodeDecodeError as exc:
        problems.append(Problem("", None, f"is not UTF-8 text ({exc.reason})", str(path)))
        return None
    except OSError as exc:
        problems.append(Problem("", None, f"cannot be read ({exc.strerror})", str(path)))
        return None
    return parse_yaml(text, str(path), problems)


def parse_yaml(text: str, file: str, problems: list[Problem]) -> Document | None:
    try:
        return compose(text, file)
    except _KeyProblem as exc:
        problems.append(Problem(key_path(exc.path), exc.line, exc.message, file))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        reason = exc.problem or exc.context or "invalid YAML"
        problems.append(Problem("", line, f"invalid YAML: {reason}", file))
    except yaml.YAMLError as exc:
        problems.append(Problem("", None, f"invalid YAML: {exc}", file))
    except RecursionError:
        problems.append(Problem("", None, "invalid YAML: nested too deeply", file))
    except (ValueError, TypeError, OverflowError) as exc:
        # PyYAML's constructors raise these for values such as out-of-range dates
        problems.append(Problem("", None, f"invalid YAML value: {exc}", file))
    return None
