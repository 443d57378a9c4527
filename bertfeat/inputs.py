"""What ``train``/``test`` may be in the Python API, as one ``Table``: a path (file, folder or glob, as on
the command line), a pandas DataFrame, or a ``(texts, labels)`` pair.

Labels keep the user's type where the input has one (a DataFrame's integer column, a list of ints);
files follow ``extract/data.py``'s one rule for labels read from text formats. A label that is a list (tuple,
set, array) per row makes the data multi-label: ``Table.labels`` is then one tuple of labels per row.
"""
from __future__ import annotations

import logging
import os

from bertfeat.errors import ConfigError, DataError

log = logging.getLogger("bertfeat")


def table_of(data, config, role: str):
    """``data`` (a path, DataFrame or ``(texts, labels)``) -> a labelled ``Table``."""
    import pandas as pd

    from bertfeat.extract import read_table
    from bertfeat.extract.cells import is_multi
    from bertfeat.extract.data import frame_table, input_files
    from bertfeat.extract.labels import label_column

    labels = {"label_sep": config.label_sep, "label_cols": config.label_cols, "task": config.task}
    if isinstance(data, (str, os.PathLike)):
        return read_table(input_files(os.fspath(data)), config.text_col, config.label_col, config.pair_col,
                          config.encoding, config.drop_empty, **labels)
    if isinstance(data, pd.DataFrame):
        source = f"the {role} DataFrame"
        table = frame_table(data.reset_index(drop=True), source, config.text_col, config.label_col,
                            config.pair_col, config.drop_empty, first_row=0, columns_from=None, typed=True, **labels)
        if not is_multi(table.labels):
            column = data[label_column(data.columns, config.label_col)].reset_index(drop=True)
            if column.dtype.kind in "biuf":  # a typed column keeps its type: 0/1 labels come back as 0/1
                table.labels = [column[i].item() for i in table.rows]
        return table
    if isinstance(data, tuple) and len(data) == 2:
        return _from_pair(data, config, role)
    raise ConfigError(f"bad {role}: {type(data).__name__}; expected a file path (or folder, or glob), a pandas "
                      "DataFrame, or a (texts, labels) pair")


def _from_pair(data, config, role: str):
    from bertfeat.classifier import _labels
    from bertfeat.extract import Table
    from bertfeat.extract.data import is_blank
    from bertfeat.extract.encoder import split_inputs

    texts, pairs = split_inputs(data[0])
    y = data[1] if data[1] is None or hasattr(data[1], "ndim") else list(data[1])  # an iterator is read once
    labels = _multi(y, config, role)
    labels = _labels(y, len(texts)) if labels is None else _counted(labels, len(texts))
    empty = [i for i, t in enumerate(texts) if is_blank(t)]
    if empty and not config.drop_empty:
        raise DataError(f"the {role} texts: {len(empty)} empty text(s), at rows {empty[:5]}; fill them in "
                        "or pass drop_empty=True to skip them")
    keep = sorted(set(range(len(texts))) - set(empty))
    def pick(seq):
        return [seq[i] for i in keep]

    return Table(pick(texts), pick(pairs) if pairs is not None else None, pick(labels), f"the {role} texts", keep)


def _multi(y, config, role: str) -> list[tuple] | None:
    """The labels of a ``(texts, labels)`` pair as one tuple per row when they are lists (or ``task`` is
    multi); None for single labels."""
    import numpy as np

    from bertfeat.extract.labels import multi_labels

    if isinstance(y, np.ndarray) and y.ndim == 2:  # one-hot rows would read as label sets {0, 1}
        raise DataError(f"the {role} labels are a 2-D array; give one list of labels per text, e.g. "
                        "[['anger', 'joy'], []], or one label per text")
    cells = list(y) if y is not None else []
    return multi_labels(cells, False, None, f"the {role} labels", 0, config.label_sep, config.task, typed=True)


def _counted(labels: list, n: int) -> list:
    if len(labels) != n:
        raise DataError(f"{n} texts but {len(labels)} labels; give one label per text")
    return labels


def labelled(train, test, config):
    """(train table, test table): ``test`` read like ``train``, or a stratified share of it
    (``config.test_size``) when None. Warnings about the labels are logged."""
    from bertfeat.extract import check_labels, split_table
    from bertfeat.extract.cells import classes_of, is_multi
    from bertfeat.extract.labels import multi_reason

    train_table = table_of(train, config, "train")
    multi = is_multi(train_table.labels)
    if multi:
        log.info("task: multi-label (%s)", multi_reason(config.label_sep, config.label_cols, config.task))
    else:
        _joined_hint(train_table)
    test_table = table_of(test, config, "test") if test is not None else None
    if test_table is None:
        from bertfeat.steps import check_split

        check_split(len(train_table.texts), len(classes_of(train_table.labels)), config.test_size,
                    train_table.source)
        train_table, test_table = split_table(train_table, config.test_size, config.seed)
    if is_multi(test_table.labels) != multi:
        kinds = {True: "multi-label (lists of labels)", False: "single-label"}
        raise DataError(f"{train_table.source} is {kinds[multi]} but {test_table.source} is {kinds[not multi]}; "
                        "give both the same kind of labels, or pass task='multi' to read single labels as lists "
                        "of one")
    test_table.labels = aligned(test_table.labels, train_table.labels)
    for warning in check_labels(train_table, test_table):
        log.warning(warning)
    return train_table, test_table


def _joined_hint(table) -> None:
    """A warning when single labels look like several joined by a separator (``billing;refund``): read
    whole, each combination would be a class of its own."""
    for sep in (";", "|", ","):
        joined = [v for v in table.labels if isinstance(v, str) and sep in v.strip(sep)]
        if len(joined) >= max(2, len(table.labels) // 20):
            log.warning("%s: %d labels contain '%s' (e.g. %r): if each lists several labels, pass label_sep='%s' "
                        "to read them as multi-label", table.source, len(joined), sep, joined[0], sep)
            return


def aligned(labels, classes):
    """``labels`` read from a file (text, by the one rule for labels) as the training labels' own values where
    their text matches: a DataFrame trained on 0/1 is scored on a CSV whose labels read "0"/"1"."""
    from bertfeat.extract.cells import classes_of, is_multi, sorted_labels
    from bertfeat.extract.data import label_text

    if labels is None:
        return None
    typed = {label_text(str(c)): c for c in classes_of(classes) if not isinstance(c, str)}
    if not typed:
        return labels
    def one(v):
        return typed.get(v, v) if isinstance(v, str) else v

    if is_multi(labels):
        return [sorted_labels(map(one, row)) for row in labels]
    return [one(v) for v in labels]


def require_single(table, what: str) -> None:
    """A one-line DataError for multi-label data given to ``what``, which learns one label per text."""
    from bertfeat.extract.cells import is_multi

    if is_multi(table.labels):
        raise DataError(f"{table.source}: multi-label (a list of labels per row), but {what} learns one label per "
                        "text; use fit or bench, which take label lists")
