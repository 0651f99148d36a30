"""Griffe extension: read jdense's docstring conventions as Google-style sections.

jdense's docstrings head their doctests ``Example:`` (griffe's Google parser knows only
``Examples:``, and would render the doctest as prose), document parameters that share a
description together (``x, y: training data``, in Args and Attributes) and name other objects with Sphinx roles
(``:func:`fit` ``, which Markdown shows as a stray ``:func:`` and which breaks a Returns line
such as ``A :class:`Checkpoint` ...`` into a name and a type). This rewrites the three
before griffe parses the docstring: a code block, one row per parameter, plain code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const):(?=`)")
_RST_LINK = re.compile(r"`([^`<>]+?)\s*<(https?://[^>]+)>`_")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_ARGS = re.compile(r"^\s*(Args|Arguments|Parameters|Attributes):\s*$")
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
            blank = []
            while len(item) > 1 and not item[-1].strip():
                blank.insert(0, item.pop())
            first = item[0]
            head = "\n".join(item)
            match = _GROUP.match(head) if first.strip() and ":" not in first.split(",")[0] else None
            if match is None:
                out.extend(item + blank)
                continue
            pad = " " * _indent(first)
            names = [n.strip() for n in match.group(1).split(",")]
            rest = match.group(2).split("\n")
            body = [rest[0].strip()] + [pad + "  " + r.strip() if r.strip() else "" for r in rest[1:]]
            for name in names:
                out.append(f"{pad}{name}: {body[0]}")
                out.extend(body[1:])
            out.extend(blank)
    return "\n".join(out)


def normalize(text: str) -> str:
    """The docstring with ``Example:`` read as ``Examples:``, grouped parameters split, roles dropped, reST links as Markdown."""
    return _split_groups(_EXAMPLE.sub(r"\1Examples:", _RST_LINK.sub(r"[\1](\2)", _ROLE.sub("", text))))


class JdenseDocstrings(griffe.Extension):
    """Applies :func:`normalize` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = normalize(obj.docstring.value)
