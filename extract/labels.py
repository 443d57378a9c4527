"""Which column holds the labels, and whether a data set is multi-label: one tuple of labels per row.

A label column is read as multi-label when its cells are lists (JSON Lines lists, a Parquet list column),
when ``label_sep`` splits its text cells (CSV ``anger;joy``), or when ``task="multi"``; one-hot columns
(``label_cols``: ``a,b,c`` or a glob such as ``emo_*``) give the names of the columns that hold 1 / true.
Anything else is a single-label column, read exactly as before (``extract/data.py``). How one cell becomes a
tuple of labels: ``cells.label_tuple``. Then the checks and the split that every labelled table goes through.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import glob
import logging
from collections import Counter
from typing import TYPE_CHECKING

from bertfeat.errors import BertfeatError, DataError
from bertfeat.extract.cells import cell_text, classes_of, is_blank, is_list, is_multi, label_text, label_tuple

if TYPE_CHECKING:
    from bertfeat.extract.data import Table

log = logging.getLogger("bertfeat")

# The default label column: `label`, or `labels` where a file has no `label` (GoEmotions, Hugging Face).
LABEL_COLS = ("label", "labels")
TASKS = ("auto", "single", "multi")
ON, OFF = ("1", "True"), ("0", "False")  # one-hot cells as label_text reads them (1.0 -> "1", TRUE -> "True")


def label_column(columns, label_col) -> str | None:
    """The column ``label_col`` names: itself, or of candidates (``LABEL_COLS``) the first that ``columns`` has
    (the first of all when none is there, for the missing-column message)."""
    if label_col is None or isinstance(label_col, str):
        return label_col
    return next((c for c in label_col if c in columns), label_col[0])


def multi_reason(label_sep: str | None, label_cols: str | None, task: str) -> str:
    """Why a data set read with these options is multi-label, for the one line that says so."""
    if label_cols:
        return f"one-hot label columns label_cols={label_cols!r}"
    if label_sep is not None:
        return f"label cells split on label_sep={label_sep!r}"
    return "task='multi'" if task == "multi" else "label cells are lists"


def multi_labels(cells: list, listed: bool, name: str | None, path: str, first_row: int, label_sep: str | None,
                 task: str, typed: bool) -> list[tuple] | None:
    """The cells of label column ``name`` as one tuple of labels per row, or None when the column is
    single-label (``task`` single, or auto with scalar cells and no ``label_sep``).

    ``listed``: the column's type is a list (Parquet), so it is multi-label even when every cell is null.
    ``name`` None: the cells are not a file's column (the Python API's list of labels).
    """
    where = f"{path}: column '{name}'" if name else path
    first_list = next((i for i, c in enumerate(cells) if is_list(c)), None)
    if task == "single":
        if first_list is not None or listed:
            row = f" (row {first_row + first_list})" if first_list is not None else ""
            raise DataError(f"{where}: lists of labels{row} but task='single'; pass "
                            "task='multi' (or 'auto') to read it as multi-label")
        return None
    by_lists = task == "auto" and label_sep is None
    if by_lists and first_list is None and not listed:
        return None
    rows = []
    for i, cell in enumerate(cells):
        if by_lists and not is_list(cell) and not _blank(cell):
            raise DataError(
                f"{where}: lists of labels (row {first_row + (first_list or 0)}) beside a single "
                f"label (row {first_row + i}); give every row a list (empty for no label), or pass task='multi' "
                "to read a single label as a list of one"
            )
        try:
            rows.append(label_tuple(cell, label_sep, typed))
        except TypeError as exc:
            raise DataError(f"{where}, row {first_row + i}: a label of type {exc}; a label "
                            "is text, a number or a boolean") from None
    return rows


def _blank(cell) -> bool:
    try:
        return is_blank(cell_text(cell))
    except TypeError:  # a dict or bytes: not blank, and label_tuple names its type
        return False


def onehot_names(columns, label_cols: str, exclude) -> list[str]:
    """The one-hot label columns ``label_cols`` names: ``a,b,c`` as listed, or a glob's matches in file order
    (less ``exclude``: the text and pair columns)."""
    if glob.has_magic(label_cols):
        return [str(c) for c in columns if fnmatch.fnmatchcase(str(c), label_cols) and c not in exclude]
    return [n.strip() for n in label_cols.split(",") if n.strip()]


def onehot_labels(frame, names: list[str], path: str, first_row: int) -> list[tuple]:
    """One tuple per row: the names of the columns whose cell is 1 / true (0 / false: not that label)."""
    on = []
    for name in names:
        column = []
        for i, value in enumerate(frame[name].tolist()):
            try:
                text = cell_text(value)
            except TypeError:
                text = None
            canonical = label_text(text) if text is not None else None
            if canonical not in ON + OFF:
                raise DataError(f"{path}: column '{name}' row {first_row + i} holds {value!r}; one-hot label "
                                "columns (label_cols=) hold 1/0 or true/false in every row")
            column.append(canonical in ON)
        on.append(column)
    # the names are sorted once, so each row's tuple comes out sorted as label_tuple sorts
    order = sorted(range(len(names)), key=lambda j: names[j])
    return [tuple(names[j] for j in order if on[j][i]) for i in range(len(frame))]


def listed(items: list, limit: int = 5) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_labels(train: Table, test: Table | None = None) -> list[str]:
    """Raise for data no classifier can learn from; return warnings worth showing.

    Multi-label alike (a row's labels are one set): at least two distinct labels over the training rows;
    a text twice with different label sets is a conflict; test labels the training rows never had are
    reported, not fatal, unless the test rows share no label at all with them (a wrong column, most likely).
    """
    multi = is_multi(train.labels)
    classes = classes_of(train.labels)
    if len(classes) < 2:
        only = f"only one {'label' if multi else 'class'} ({next(iter(classes))!r})" if classes else "no label"
        raise BertfeatError(f"{train.source}: {only} in the training labels; a classifier needs at least two")
    warnings = []
    seen: dict[tuple, set] = {}
    for i, text in enumerate(train.texts):
        key = (text, train.pairs[i] if train.pairs else None)
        seen.setdefault(key, set()).add(train.labels[i])
    conflicts = sum(1 for labels in seen.values() if len(labels) > 1)
    if conflicts:
        warnings.append(f"{train.source}: {conflicts} text(s) appear more than once with different labels")
    if test is not None and test.labels is not None:
        rows = [row if multi else (row,) for row in test.labels]
        unseen = [lab for row in rows for lab in row if lab not in classes]
        absent = listed(sorted(set(unseen), key=str))  # key=str: the Python API's labels may mix types
        given = sum(len(row) for row in rows)
        if given and len(unseen) == given:  # every prediction would be wrong: a score of 0 means nothing
            raise DataError(
                f"{test.source} and {train.source} share no label: test labels {absent}; training labels "
                f"{listed(sorted(classes, key=str))}; check that label_col= names the same column in both "
                "files and that both spell the labels alike"
            )
        if unseen:
            n_rows = sum(1 for row in rows if any(lab not in classes for lab in row))
            warnings.append(f"{test.source}: {n_rows} row(s) have labels absent from the training data "
                            f"({absent}); they count as errors")
    return warnings


def split_table(table: Table, test_size: float, seed: int) -> tuple[Table, Table]:
    """Stratified train/test split of a labelled table (random where a class is too small to stratify;
    multi-label: stratified on each row's rarest label)."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise BertfeatError(f"bad test_size={test_size}; expected a fraction between 0 and 1, e.g. 0.2")
    idx = list(range(len(table.texts)))
    strata = table.labels
    if is_multi(table.labels):  # label sets are too many to stratify on: each row's rarest label stands for it
        count = Counter(lab for row in table.labels for lab in row)
        strata = [str(min(row, key=lambda lab: (count[lab], str(lab)))) if row else "" for row in table.labels]
        size = Counter(strata)
        strata = [s if size[s] > 1 else "" for s in strata]  # a stratum of one row joins the unlabelled rows
        log.info("%s: multi-label split, stratified on each row's rarest label", table.source)
    try:
        a, b = train_test_split(idx, test_size=test_size, random_state=seed, stratify=strata)
    except ValueError:  # a class with a single row cannot be stratified
        log.warning("%s: some classes are too small to stratify the split; splitting at random", table.source)
        a, b = train_test_split(idx, test_size=test_size, random_state=seed)

    def take(rows, name):
        pick = lambda seq: [seq[i] for i in rows] if seq is not None else None  # noqa: E731
        return dataclasses.replace(table, texts=pick(table.texts), pairs=pick(table.pairs),
                                   labels=pick(table.labels), source=f"{table.source} ({name})", rows=pick(table.rows))

    return take(a, "train split"), take(b, "test split")
