"""Griffe extension: read jdense's docstring conventions as Google-style sections.

jdense's docstrings head their doctests ``Example:`` (griffe's Google parser knows only
``Examples:``, and would render the doctest as prose) and document parameters that share
a description together, ``x, y: training data``. This rewrites both before griffe parses
the docstring, so the API reference shows a code block and one row per parameter.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_ARGS = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_GROUP = re.compile(r"^\s*((?:\*{0,2}\w+\s*,\s*)+\*{0,2}\w+)\s*:\s?(.*)$", re.S)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _split_groups(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        if not _ARGS.match(lines[i]):
            i += 1
            continue
        header = _indent(lines[i])
        i += 1
        items: list[list[str]] = []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > header):
            line = lines[i]
            if items and (not line.strip() or _indent(line) > _indent(items[0][0])):
                items[-1].append(line)
            else:
                items.append([line])
            i += 1
        for item in items:
            first = item[0]
            head = "\n".join(item)
            match = _GROUP.match(head) if first.strip() and ":" not in first.split(",")[0] else None
            if match is None:
                out.extend(item)
                continue
            pad = " " * _indent(first)
            names = [n.strip() for n in match.group(1).split(",")]
            rest = match.group(2).split("\n")
            body = [rest[0].strip()] + [pad + "  " + r.strip() if r.strip() else "" for r in rest[1:]]
            for name in names:
                out.append(f"{pad}{name}: {body[0]}")
                out.extend(body[1:])
    return "\n".join(out)


def normalize(text: str) -> str:
    """The docstring with ``Example:`` read as ``Examples:`` and grouped parameters split."""
    return _split_groups(_EXAMPLE.sub(r"\1Examples:", text))


class JdenseDocstrings(griffe.Extension):
    """Applies :func:`normalize` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = normalize(obj.docstring.value)
