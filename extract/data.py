"""Read labelled text tables (CSV, TSV, JSON Lines, Parquet) into plain lists, with errors a user can act on.

What one cell may hold, when a text is empty and how labels compare (one rule in every format, so a CSV and
a Parquet copy of it give the same classes): ``extract/cells.py``.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import logging
import os
from dataclasses import dataclass

import pandas as pd

from bertfeat.errors import BertfeatError, DataError
from bertfeat.extract.cells import cell_text, is_blank, label_text

log = logging.getLogger("bertfeat")

READERS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass
class Table:
    """Texts (and optional pair texts and labels) read from one or more files."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[str] | None
    source: str
    rows: list[int]  # 1-based data row numbers in the file(s), for messages


def input_files(specs: str | list[str]) -> list[str]:
    """Files, folders (their data files, sorted) and glob patterns -> data files, in order."""
    import glob

    files = []
    for spec in [specs] if isinstance(specs, str) else specs:
        if os.path.isdir(spec):
            found = sorted(os.path.join(spec, n) for n in os.listdir(spec))
        elif glob.has_magic(spec):
            found = sorted(glob.glob(spec))
        else:
            files.append(spec)  # read_table reports a missing or unknown file
            continue
        found = [f for f in found if os.path.isfile(f) and os.path.splitext(f)[1].lower() in READERS]
        if not found:
            raise BertfeatError(f"{spec}: no data files ({', '.join(sorted(READERS))}) found there; check the path")
        files += found
    return files


def check_encoding(encoding: str) -> None:
    """Fail in one line on an encoding name Python does not know (before any file is opened)."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise BertfeatError(f"encoding={encoding!r}: unknown text encoding; pass one Python knows, "
                            "e.g. utf-8, latin-1 or cp1252") from None


def _read_frames(path: str, encoding: str, rows: int | None = None):
    """Yield the file as data frames of at most ``rows`` rows (None: the whole file as one frame).

    The readers cut the batches themselves (pandas ``chunksize``, pyarrow ``iter_batches``), so only one batch
    of a file is in memory at a time; a parse error is one line, whichever batch meets it.
    """
    if not os.path.exists(path):
        raise BertfeatError(f"{path}: file not found; check the path")
    if os.path.isdir(path):
        raise BertfeatError(f"{path}: is a directory; pass a data file")
    ext = os.path.splitext(path)[1].lower()
    kind = READERS.get(ext)
    if kind is None:
        raise BertfeatError(
            f"{path}: unknown file type '{ext or '(none)'}'; expected one of: {', '.join(sorted(READERS))}"
        )
    if os.path.getsize(path) == 0:
        raise BertfeatError(f"{path}: file is empty; it needs a header row and at least one data row")
    try:
        if kind == "csv":  # RFC 4180: quoted fields may hold commas, quotes and newlines
            frames = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding=encoding,
                                 chunksize=rows)
        elif kind == "tsv":  # TSV has no quoting: a text that starts with `"` is just a text
            frames = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False,
                                 encoding=encoding, quoting=csv.QUOTE_NONE, chunksize=rows)
        elif kind == "jsonl":
            frames = pd.read_json(path, lines=True, dtype=False, encoding=encoding, chunksize=rows)
        else:
            frames = _read_parquet(path, rows)
        if rows is None:
            yield frames
            return
        with contextlib.closing(frames):
            yield from frames
    except UnicodeDecodeError:
        row = _bad_utf8_row(path, encoding)
        raise BertfeatError(
            f"{path}: bytes that are not valid {encoding} near line {row}; "
            f"re-save the file as UTF-8 or pass its encoding (e.g. encoding='latin-1')"
        ) from None
    except pd.errors.EmptyDataError:
        raise BertfeatError(f"{path}: file is empty; it needs a header row and at least one data row") from None
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BertfeatError(f"{path}: could not parse as {kind}: {first}") from None


def _read_parquet(path: str, rows: int | None = None):
    """The whole file as one frame (``rows`` None), else a generator of frames of ``rows`` rows."""
    import pyarrow.parquet as pq

    if rows is None:
        return parquet_frame(pq.read_table(path))
    return (parquet_frame(batch) for batch in pq.ParquetFile(path).iter_batches(batch_size=rows))


def parquet_frame(table) -> pd.DataFrame:
    """A pyarrow Table or RecordBatch (a whole Parquet file, or one batch of it) -> a frame for ``frame_table``.

    Integer columns with nulls stay exact Python ints (pandas would make them floats). Columns of a type
    bertfeat cannot read as text (lists, structs, maps, binary, dates) are recorded in
    ``frame.attrs["unreadable"]`` with their Parquet type, so using one is refused even when every cell is null.
    """
    import pyarrow as pa

    def unreadable(t) -> bool:
        return (pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
                or pa.types.is_fixed_size_binary(t) or pa.types.is_temporal(t))

    frame = table.to_pandas(integer_object_nulls=True)
    frame.attrs["unreadable"] = {field.name: str(field.type) for field in table.schema if unreadable(field.type)}
    return frame


def _bad_utf8_row(path: str, encoding: str) -> int | str:
    # The decoder's offset is relative to a parser buffer, so find the physical line ourselves.
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                return number
    return "?"


def _column(frame: pd.DataFrame, name: str, path: str, flag: str, first_row: int,
            columns_from: str | None = None) -> list[str | None]:
    if name not in frame.columns:
        cols = ", ".join(map(str, frame.columns)) or "(none)"
        fix = (f"pass {flag}= with one of them" if columns_from is None else
               f"{columns_from} reads column '{name}': rename the file's column to '{name}'")
        raise BertfeatError(f"{path}: no column '{name}' (columns: {cols}); {fix}")
    column = frame[name]
    # A typed column (Parquet, datetime dtype) is refused by its type; an untyped one by its first bad cell.
    kind = frame.attrs.get("unreadable", {}).get(name) or (str(column.dtype) if column.dtype.kind in "mM" else None)
    where = ""
    cells = []
    if kind is None:
        for i, value in enumerate(column.tolist()):
            try:
                cells.append(cell_text(value))
            except TypeError as exc:
                kind, where = str(exc), f" (row {first_row + i})"
                break
    if kind is not None:
        raise BertfeatError(
            f"{path}: column '{name}' has type {kind}{where}; bertfeat reads text (and numbers or booleans as "
            "labels): convert the column to strings or pick another column"
        )
    return cells


def _listed(items: list, limit: int = 5) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def frame_table(frame: pd.DataFrame, path: str, text_col: str = "text", label_col: str | None = "label",
                pair_col: str | None = None, drop_empty: bool = False, label_optional: bool = False,
                first_row: int = 2, columns_from: str | None = None) -> Table:
    """One data frame (a whole file, or one batch of it) -> a checked Table.

    ``first_row``: the file row number of the frame's first row, for messages (2: after the header).
    ``columns_from``: who chose the column names, for a missing column's message (e.g. "the model";
    None: the user, through --text-col / --label-col / --pair-col).
    Cells are read as text; missing values of every kind count as blank; a column of lists, structs
    or bytes is refused in one line naming it. ``labels`` is None when the frame has no labels to read.
    """
    t = _column(frame, text_col, path, "text_col", first_row, columns_from)
    p = _column(frame, pair_col, path, "pair_col", first_row, columns_from) if pair_col else None
    use_labels = bool(label_col) and not (label_optional and label_col not in frame.columns)
    y = _column(frame, label_col, path, "label_col", first_row, columns_from) if use_labels else None
    empty = [first_row + i for i, v in enumerate(t) if is_blank(v)]
    if empty and not drop_empty:
        raise BertfeatError(
            f"{path}: {len(empty)} empty text(s) in column '{text_col}' at row(s) {_listed(empty)}; "
            "fill them in or pass drop_empty=True to skip them"
        )
    if empty:
        log.warning("%s: skipping %d empty text(s) (--drop-empty)", path, len(empty))
    keep = [i for i, v in enumerate(t) if not is_blank(v)]
    if y is not None:
        blank = [first_row + i for i in keep if is_blank(y[i])]
        if blank:
            raise BertfeatError(
                f"{path}: {len(blank)} blank label(s) in column '{label_col}' at row(s) {_listed(blank)}; "
                "label them or remove those rows"
            )
    return Table(texts=[t[i] for i in keep],
                 pairs=[p[i] or "" for i in keep] if p is not None else None,
                 labels=[label_text(y[i]) for i in keep] if y is not None else None,
                 source=path, rows=[first_row + i for i in keep])


def concat_tables(parts: list[Table]) -> Table:
    """Tables of several files (or batches) -> one; labels (pairs) only if every part has them."""
    texts = [t for part in parts for t in part.texts]
    if not texts:
        raise BertfeatError(f"{', '.join(dict.fromkeys(p.source for p in parts))}: no non-empty texts to read")
    has_pairs = all(part.pairs is not None for part in parts)
    has_labels = all(part.labels is not None for part in parts)
    return Table(texts,
                 [x for part in parts for x in part.pairs] if has_pairs else None,
                 [x for part in parts for x in part.labels] if has_labels else None,
                 ", ".join(dict.fromkeys(p.source for p in parts)),
                 [r for part in parts for r in part.rows])


def read_table(
    paths: str | list[str],
    text_col: str = "text",
    label_col: str | None = "label",
    pair_col: str | None = None,
    encoding: str = "utf-8",
    drop_empty: bool = False,
    label_optional: bool = False,
    *,
    columns_from: str | None = None,
) -> Table:
    """Read texts (and labels when ``label_col`` is given) from one or more files.

    Parameters
    ----------
    paths : str or list of str
        CSV, TSV, JSON Lines or Parquet files, chosen by extension.
    text_col, label_col, pair_col : str
        Column names; ``label_col=None`` reads unlabelled data.
    drop_empty : bool, default=False
        Skip rows whose text is empty instead of raising.
    label_optional : bool, default=False
        Read labels only if the file has ``label_col`` (for prediction files).
    columns_from : str or None, default=None
        Who chose the column names, for a missing column's message ("the model": rename the file's
        column); None: the user, through the --text-col / --label-col / --pair-col flags.
    """
    return concat_tables(list(iter_tables(paths, text_col, label_col, pair_col, encoding, drop_empty,
                                          label_optional, rows=None, columns_from=columns_from)))


def iter_tables(paths: str | list[str], text_col: str = "text", label_col: str | None = "label",
                pair_col: str | None = None, encoding: str = "utf-8", drop_empty: bool = False,
                label_optional: bool = False, rows: int | None = 50_000, columns_from: str | None = None):
    """``read_table`` one batch of at most ``rows`` rows at a time (None: one Table per file), for corpora
    larger than memory: the same checks, errors and file row numbers.

    A batch is checked when it is read, so an error in a later batch comes after earlier batches were
    yielded. A batch whose texts were all empty (``drop_empty``) is yielded with no texts.
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    check_encoding(encoding)
    any_text = False
    for path in paths:
        first_row = 2  # 1-based, after the header
        for frame in _read_frames(path, encoding, rows):
            if len(frame):
                table = frame_table(frame, path, text_col, label_col, pair_col, drop_empty, label_optional,
                                    first_row, columns_from)
                first_row += len(frame)
                any_text = any_text or bool(table.texts)
                yield table
        if first_row == 2:
            raise BertfeatError(f"{path}: has a header but no data rows")
    if not any_text:
        raise BertfeatError(f"{', '.join(dict.fromkeys(paths))}: no non-empty texts to read")


def check_labels(train: Table, test: Table | None = None) -> list[str]:
    """Raise for data no classifier can learn from; return warnings worth showing."""
    classes = set(train.labels)
    if len(classes) < 2:
        raise BertfeatError(
            f"{train.source}: only one class ({next(iter(classes))!r}) in the training labels; "
            "a classifier needs at least two"
        )
    warnings = []
    seen: dict[tuple, set] = {}
    for i, text in enumerate(train.texts):
        key = (text, train.pairs[i] if train.pairs else None)
        seen.setdefault(key, set()).add(train.labels[i])
    conflicts = sum(1 for labels in seen.values() if len(labels) > 1)
    if conflicts:
        warnings.append(f"{train.source}: {conflicts} text(s) appear more than once with different labels")
    if test is not None and test.labels is not None:
        unseen = [lab for lab in test.labels if lab not in classes]
        absent = _listed(sorted(set(unseen), key=str))  # key=str: the Python API's labels may mix types
        if len(unseen) == len(test.labels):  # every prediction would be wrong: a score of 0 means nothing
            raise DataError(
                f"{test.source} and {train.source} share no label: test labels {absent}; training labels "
                f"{_listed(sorted(classes, key=str))}; check that label_col= names the same column in both "
                "files and that both spell the labels alike"
            )
        if unseen:
            warnings.append(f"{test.source}: {len(unseen)} row(s) have labels absent from the training data "
                            f"({absent}); they count as errors")
    return warnings


def split_table(table: Table, test_size: float, seed: int) -> tuple[Table, Table]:
    """Stratified train/test split of a labelled table (random where a class is too small to stratify)."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise BertfeatError(f"bad test_size={test_size}; expected a fraction between 0 and 1, e.g. 0.2")
    idx = list(range(len(table.texts)))
    try:
        a, b = train_test_split(idx, test_size=test_size, random_state=seed, stratify=table.labels)
    except ValueError:  # a class with a single row cannot be stratified
        log.warning("%s: some classes are too small to stratify the split; splitting at random", table.source)
        a, b = train_test_split(idx, test_size=test_size, random_state=seed)

    def take(rows, name):
        pick = lambda seq: [seq[i] for i in rows] if seq is not None else None  # noqa: E731
        return Table(pick(table.texts), pick(table.pairs), pick(table.labels), f"{table.source} ({name})",
                     pick(table.rows))

    return take(a, "train split"), take(b, "test split")
