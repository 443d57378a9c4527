"""Library messages in the command line's words: ``bad cv=1`` -> ``bad --cv 1``, ``pass drop_empty=True`` ->
``pass --drop-empty``, for errors and log lines alike. Only names that are flags of the parser change
(``C=10`` stays)."""
from __future__ import annotations

import argparse
import logging
import re
import sys

# `name=value`: a quoted value, True (a switch), or a bare word up to punctuation that ends a clause
_PARAM = re.compile(r"\b([a-z][a-z0-9_]*)=(True\b|'[^']*'|[^\s;:,)]+)?")


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--flag`` of ``parser`` and its subcommands."""
    found = set()
    for action in parser._actions:
        found.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


def in_flags(message: str, flags: set[str]) -> str:
    def flag(m):
        name = "--" + m.group(1).replace("_", "-")
        if name not in flags:
            return m.group(0)
        value = m.group(2)
        return name if value in (None, "True") else f"{name} {value}"

    return _PARAM.sub(flag, message)


class _FlagFormatter(logging.Formatter):
    def __init__(self, fmt: str, flags: set[str]):
        super().__init__(fmt)
        self.flags = flags

    def format(self, record):
        return in_flags(super().format(record), self.flags)


def log_to_stderr(log: logging.Logger, quiet: bool, flags: set[str]) -> None:
    """``log`` to stderr in the command line's words; set again on each in-process call (a test's second
    ``main()`` may be quiet or not)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FlagFormatter("%(levelname)s: %(message)s" if quiet else "%(message)s", flags))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
