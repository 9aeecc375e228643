"""How a config field is described in the configuration reference: its metadata.

`make reference` (tools/reference.py) writes docs/reference/configuration.md from these, and
tests/unit/test_reference.py fails when a key the parser asks for has no description, or a
description names a key the parser never asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


def doc(text: str, *, key: str = "", kind: str = "", required: str = "") -> Mapping[str, str]:
    """A field's entry in the configuration reference, as its metadata: what the key does;
    `key` when the YAML spells it otherwise (dotted below a mapping: `ssh_tunnel.bastion`);
    `kind` when the field's type does not say what the YAML takes; `required` when a field
    without a default is required only in some cases."""
    return {"doc": text, "key": key, "kind": kind, "required": required}


def part_of(key: str) -> Mapping[str, str]:
    """A field filled from a key another field of the same mapping describes (`http.listen`
    fills host and port)."""
    return {"part_of": key}


def flattened(why: str) -> Mapping[str, str]:
    """A field whose own fields' keys sit in this mapping, not in one of their own."""
    return {"flattened": why}


def internal(why: str) -> Mapping[str, str]:
    """A field no YAML key fills."""
    return {"internal": why}


@dataclass(frozen=True, slots=True)
class KeyDoc:
    """A YAML key with no field of its own (read into other fields): its reference entry."""

    doc: str
    kind: str
    default: object = None
    required: str = ""
