"""One table cell as text: what a cell may hold, when a text is empty, and the one rule for labels.

Labels follow one rule in every format (``label_text``), so a CSV and a Parquet copy of it give the same
classes. A label is compared as its canonical text:

- a number canonicalizes the same way whether the file typed it (JSONL, Parquet) or wrote it as text
  (CSV, TSV, a string column): integral values as integers (``1``, ``1.0``, ``1.00``, ``1e0`` -> ``1``,
  ``-0`` -> ``0``), others by the shortest text that reads back as the same float (``0.50`` -> ``0.5``,
  ``1E-7`` -> ``1e-07``). Text counts as a number only when it is spelled as JSON spells one: ``007``
  (leading zeros: an ID), ``+1``, ``.5``, ``1.``, ``1_000``, ``0x10``, ``nan``, ``inf`` and numbers too large
  for a float stay exactly as written, so distinct IDs are never merged;
- a boolean reads ``True`` / ``False``, typed or as text in any case (JSON writes ``true``, Python ``True``,
  R and Excel ``TRUE``); ``yes``, ``1`` and ``0`` are not booleans;
- any other text stays as written, less surrounding whitespace.

Texts are never canonicalized: only labels are compared as classes.

A multi-label data set gives each row a tuple of labels (``label_tuple``): each one canonical as above,
distinct, sorted; ``()`` for a row with no label. ``is_multi`` tells the two kinds of label list apart.
"""
from __future__ import annotations

import math
import numbers
import re
import unicodedata

import numpy as np
import pandas as pd


# Cells that are not one scalar, by the name a user knows them from (Parquet / JSON / pandas).
NESTED = ((bytes, "binary"), (bytearray, "binary"), (memoryview, "binary"), (dict, "struct"),
          (list, "list"), (tuple, "list"), (np.ndarray, "list"))


def cell_text(value) -> str | None:
    """One table cell as text, None for every kind of missing value (None, NaN, pd.NA, NaT).

    Raises TypeError(kind) for a cell that is not text, a number or a boolean.
    """
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Number):
        if value != value:  # NaN (float, numpy or Decimal)
            return None
        # 1.0 from a numeric column with gaps (Parquet, JSONL) reads as "1", the integer it holds.
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value)  # numpy's str is the shortest text at the value's own precision (float32 0.1: "0.1")
    for kind, name in NESTED:
        if isinstance(value, kind):
            raise TypeError(name)
    raise TypeError(type(value).__name__)


def is_blank(text: str | None) -> bool:
    """The one rule for an empty text, in files and ``predict --text`` alike: None, or nothing but
    whitespace and characters a tokenizer drops (zero-width spaces, BOMs, control characters)."""
    if text is None:
        return True
    text = text.strip()
    # Invisible: control (Cc) and format (Cf: zero-width space, BOM) characters. An unassigned or private
    # character is not: the tokenizer maps it to [UNK], a token like any other.
    return not text or all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


# A number as JSON spells it (see the module docstring): groups 2 and 3 are the fraction and the exponent.
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def label_text(cell: str) -> str:
    """A label's canonical text, the same in every format: ``"1.0"`` and the float 1.0 (as ``cell_text`` reads it)
    both give ``"1"``, ``"TRUE"`` gives ``"True"``, ``"007"`` stays ``"007"`` (the rule: module docstring)."""
    cell = cell.strip()
    if cell.lower() in ("true", "false"):
        return cell.capitalize()
    number = _NUMBER.fullmatch(cell)
    if number is None:
        return cell
    if not (number.group(2) or number.group(3)):
        return "0" if cell == "-0" else cell  # an integer is already canonical; int() of a huge one may raise
    value = float(cell)
    if not math.isfinite(value):
        return cell
    return str(int(value)) if value.is_integer() else repr(value)


def is_list(cell) -> bool:
    """A cell that holds several labels: a list, tuple, set or array (JSON Lines lists, Parquet list columns)."""
    return isinstance(cell, (list, tuple, set, frozenset, np.ndarray))


def is_multi(labels) -> bool:
    """True when ``labels`` (one entry per row) are multi-label: a tuple of labels per row."""
    return labels is not None and len(labels) > 0 and isinstance(labels[0], tuple)


def classes_of(labels) -> set:
    """The distinct labels of a label list, single- or multi-label alike."""
    if labels is None:
        return set()
    return {v for row in labels for v in row} if is_multi(labels) else set(labels)


def sorted_labels(labels) -> tuple:
    """Distinct labels in one order: by value, or by text where values of the Python API mix types."""
    try:
        return tuple(sorted(set(labels)))
    except TypeError:
        return tuple(sorted(set(labels), key=str))


def label_tuple(cell, sep: str | None = None, typed: bool = False) -> tuple:
    """One multi-label cell -> its labels (``()`` for a missing or empty cell).

    A list-like cell gives one label per item; text is split on ``sep`` when given (parts trimmed, empty
    ones dropped); any other value is one label. Labels read as ``label_text`` gives them, or, with
    ``typed`` (the Python API's own values), numbers and booleans keep their type as single labels do.
    Raises TypeError(kind) for an item that is itself nested.
    """
    if is_list(cell):
        items = list(cell)
    elif sep is not None and isinstance(cell, str):
        items = cell.split(sep)
    else:
        items = [cell]
    labels = []
    for item in items:
        text = cell_text(item)
        if is_blank(text):
            continue
        if typed and not isinstance(item, str):
            labels.append(item.item() if isinstance(item, np.generic) else item)
        else:
            labels.append(label_text(text))
    return sorted_labels(labels)
