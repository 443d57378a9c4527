"""Read labelled text tables (CSV, TSV, JSON Lines, Parquet) into plain lists, with errors a user can act on.

What one cell may hold, when a text is empty and how labels compare (one rule in every format, so a CSV and
a Parquet copy of it give the same classes): ``extract/cells.py``. Which column holds the labels and whether
they are multi-label (a tuple of labels per row): ``extract/labels.py``.
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
from bertfeat.extract.cells import cell_text, is_blank, is_multi, label_text
# check_labels and split_table are read here by older imports (bertfeat.extract.data.check_labels)
from bertfeat.extract.labels import (LABEL_COLS, check_labels, label_column, listed, multi_labels,  # noqa: F401
                                     onehot_labels, onehot_names, split_table)

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
    labels: list | None  # one label per row, or for a multi-label data set one tuple of labels (cells.is_multi)
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
    ``frame.attrs["unreadable"]`` with their Parquet type, so using one is refused even when every cell is null;
    those that are lists of scalars also in ``frame.attrs["lists"]``: a label column may be one (multi-label).
    """
    import pyarrow as pa

    def unreadable(t) -> bool:
        return (pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
                or pa.types.is_fixed_size_binary(t) or pa.types.is_temporal(t))

    def listed(t) -> bool:
        return ((pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
                and not unreadable(t.value_type))

    frame = table.to_pandas(integer_object_nulls=True)
    frame.attrs["unreadable"] = {field.name: str(field.type) for field in table.schema if unreadable(field.type)}
    frame.attrs["lists"] = [field.name for field in table.schema if listed(field.type)]
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


def _require(frame: pd.DataFrame, names: list[str], path: str, flag: str, columns_from: str | None,
             alternatives: bool = False) -> None:
    """Raise, naming the file's columns, for the first of ``names`` the frame lacks (``alternatives``: for
    when it has none of them: any one would do)."""
    missing = [n for n in names if n not in frame.columns]
    if not missing or (alternatives and len(missing) < len(names)):
        return
    cols = ", ".join(map(str, frame.columns)) or "(none)"
    name = missing[0]
    what = " or ".join(f"'{n}'" for n in missing) if alternatives else f"'{name}'"
    fix = (f"pass {flag}= with one of them" if columns_from is None else
           f"{columns_from} reads column {what}: rename the file's column to '{name}'")
    raise BertfeatError(f"{path}: no column {what} (columns: {cols}); {fix}")


def _column(frame: pd.DataFrame, name: str, path: str, flag: str, first_row: int,
            columns_from: str | None = None) -> list[str | None]:
    _require(frame, [name], path, flag, columns_from)
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


def frame_table(frame: pd.DataFrame, path: str, text_col: str = "text", label_col=LABEL_COLS,
                pair_col: str | None = None, drop_empty: bool = False, label_optional: bool = False,
                first_row: int = 2, columns_from: str | None = None, *, label_sep: str | None = None,
                label_cols: str | None = None, task: str = "auto", typed: bool = False) -> Table:
    """One data frame (a whole file, or one batch of it) -> a checked Table.

    ``first_row``: the file row number of the frame's first row, for messages (2: after the header).
    ``columns_from``: who chose the column names, for a missing column's message (e.g. "the model";
    None: the user, through --text-col / --label-col / --pair-col).
    Cells are read as text; missing values of every kind count as blank; a column of lists, structs
    or bytes is refused in one line naming it (lists are labels in a multi-label column: ``extract/labels.py``,
    where ``label_sep``, ``label_cols``, ``task`` and ``typed`` are described). ``labels`` is None when the
    frame has no labels to read.
    """
    t = _column(frame, text_col, path, "text_col", first_row, columns_from)
    p = _column(frame, pair_col, path, "pair_col", first_row, columns_from) if pair_col else None
    y = _label_rows(frame, path, label_col, label_optional, first_row, columns_from, label_sep, label_cols, task,
                    typed, exclude=(text_col, pair_col))
    empty = [first_row + i for i, v in enumerate(t) if is_blank(v)]
    if empty and not drop_empty:
        raise BertfeatError(
            f"{path}: {len(empty)} empty text(s) in column '{text_col}' at row(s) {listed(empty)}; "
            "fill them in or pass drop_empty=True to skip them"
        )
    if empty:
        log.warning("%s: skipping %d empty text(s) (--drop-empty)", path, len(empty))
    keep = [i for i, v in enumerate(t) if not is_blank(v)]
    multi = is_multi(y)
    if y is not None and not multi:  # a multi-label row may have no label: ()
        blank = [first_row + i for i in keep if is_blank(y[i])]
        if blank:
            raise BertfeatError(
                f"{path}: {len(blank)} blank label(s) in column '{label_column(frame.columns, label_col)}' at "
                f"row(s) {listed(blank)}; label them or remove those rows"
            )
    return Table(texts=[t[i] for i in keep],
                 pairs=[p[i] or "" for i in keep] if p is not None else None,
                 labels=[y[i] if multi else label_text(y[i]) for i in keep] if y is not None else None,
                 source=path, rows=[first_row + i for i in keep])


def _label_rows(frame, path, label_col, label_optional, first_row, columns_from, label_sep, label_cols, task,
                typed, exclude) -> list | None:
    """The frame's labels, one per row (single-label cells as text, blanks unchecked), or one tuple per row
    (multi-label); None when there are none to read."""
    if label_cols:
        names = onehot_names(frame.columns, label_cols, exclude)
        if label_optional and (not names or any(n not in frame.columns for n in names)):
            return None
        if not names:
            raise DataError(f"{path}: no column matches label_cols={label_cols!r} (columns: "
                            f"{', '.join(map(str, frame.columns))}); pass the one-hot columns' names or prefix")
        _require(frame, names, path, "label_cols", columns_from)
        return onehot_labels(frame, names, path, first_row)
    name = label_column(frame.columns, label_col)
    if not name or (label_optional and name not in frame.columns):
        return None
    _require(frame, [label_col] if isinstance(label_col, str) else list(label_col), path, "label_col",
             columns_from, alternatives=True)
    listed = name in frame.attrs.get("lists", ())
    if name not in frame.attrs.get("unreadable", {}) or listed:
        rows = multi_labels(frame[name].tolist(), listed, name, path, first_row, label_sep, task, typed)
        if rows is not None:
            return rows
    return _column(frame, name, path, "label_col", first_row, columns_from)


def concat_tables(parts: list[Table]) -> Table:
    """Tables of several files (or batches) -> one; labels (pairs) only if every part has them."""
    texts = [t for part in parts for t in part.texts]
    if not texts:
        raise BertfeatError(f"{', '.join(dict.fromkeys(p.source for p in parts))}: no non-empty texts to read")
    has_pairs = all(part.pairs is not None for part in parts)
    has_labels = all(part.labels is not None for part in parts)
    kinds = {is_multi(part.labels): part.source for part in parts if part.labels}
    if len(kinds) > 1:
        raise DataError(f"{kinds[True]} is multi-label (lists of labels) but {kinds[False]} has single labels; "
                        "pass task='multi' to read a single label as a list of one")
    return Table(texts,
                 [x for part in parts for x in part.pairs] if has_pairs else None,
                 [x for part in parts for x in part.labels] if has_labels else None,
                 ", ".join(dict.fromkeys(p.source for p in parts)),
                 [r for part in parts for r in part.rows])


def read_table(
    paths: str | list[str],
    text_col: str = "text",
    label_col: str | tuple[str, ...] | None = LABEL_COLS,
    pair_col: str | None = None,
    encoding: str = "utf-8",
    drop_empty: bool = False,
    label_optional: bool = False,
    *,
    columns_from: str | None = None,
    label_sep: str | None = None,
    label_cols: str | None = None,
    task: str = "auto",
) -> Table:
    """Read texts (and labels when ``label_col`` is given) from one or more files.

    Parameters
    ----------
    paths : str or list of str
        CSV, TSV, JSON Lines or Parquet files, chosen by extension.
    text_col, label_col, pair_col : str
        Column names; ``label_col=None`` reads unlabelled data; a tuple of names: the first the file has
        (the default: ``label``, else ``labels``).
    drop_empty : bool, default=False
        Skip rows whose text is empty instead of raising.
    label_optional : bool, default=False
        Read labels only if the file has ``label_col`` (for prediction files).
    columns_from : str or None, default=None
        Who chose the column names, for a missing column's message ("the model": rename the file's
        column); None: the user, through the --text-col / --label-col / --pair-col flags.
    label_sep : str or None, default=None
        Multi-label: split text label cells on it (``anger;joy``); an empty cell is a row with no label.
    label_cols : str or None, default=None
        Multi-label from one-hot columns: ``a,b,c`` or a glob (``emo_*``); the labels are the column names.
    task : {"auto", "single", "multi"}, default="auto"
        auto: multi-label when label cells are lists, or ``label_sep`` / ``label_cols`` is given.
        ``labels`` is then one tuple of labels per row (``extract/labels.py``).
    """
    return concat_tables(list(iter_tables(paths, text_col, label_col, pair_col, encoding, drop_empty,
                                          label_optional, rows=None, columns_from=columns_from,
                                          label_sep=label_sep, label_cols=label_cols, task=task)))


def iter_tables(paths: str | list[str], text_col: str = "text", label_col: str | tuple[str, ...] | None = LABEL_COLS,
                pair_col: str | None = None, encoding: str = "utf-8", drop_empty: bool = False,
                label_optional: bool = False, rows: int | None = 50_000, columns_from: str | None = None,
                label_sep: str | None = None, label_cols: str | None = None, task: str = "auto"):
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
                                    first_row, columns_from, label_sep=label_sep, label_cols=label_cols, task=task)
                first_row += len(frame)
                any_text = any_text or bool(table.texts)
                yield table
        if first_row == 2:
            raise BertfeatError(f"{path}: has a header but no data rows")
    if not any_text:
        raise BertfeatError(f"{', '.join(dict.fromkeys(paths))}: no non-empty texts to read")
