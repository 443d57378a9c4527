"""One frozen dataclass of options per command: the single source of names and defaults.

The Python functions (``bertfeat.fit(train, head="svm", cv=5)``) take these fields as keyword arguments;
the command line builds the same dataclass from argv (``--class-weight`` -> ``class_weight``); ``run.json``
records ``asdict(config)``. Only ``check`` validates, and it names the parameter, never a flag: the
CLI turns ``cv=`` into ``--cv`` when it prints the error.
"""
from __future__ import annotations

import codecs
import dataclasses
from dataclasses import dataclass, field

from bertfeat.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names the command line offers as choices, kept here so that `--help` imports no scikit-learn or torch;
# tests/test_api.py checks each against the registry it mirrors (classify.HEADS, extract.POOLINGS, ...).
HEAD_NAMES = ("knn", "lda", "lgbm", "logreg", "mlp", "sgd", "svm", "torch", "vote")
DEFAULT_HEADS = ("knn", "lda", "logreg", "svm")
DEFAULT_VIEWS = ("mean", "mean+max", "mean+max+mean@-2+mean@-3", "mean+mean@-2+mean@-3+mean@-4")
SCORES = ("accuracy", "macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "jaccard")
SINGLE_SCORES = ("accuracy", "macro_f1")  # the others score sets of labels (classify/thresholds.py)
# scikit-learn's scorer names for the same scores
SCORE_ALIASES = {"f1_macro": "macro_f1", "f1_micro": "micro_f1", "f1_samples": "samples_f1",
                 "jaccard_samples": "jaccard"}
POOLINGS = ("cls", "max", "mean")
PRECISIONS = ("auto", "bf16", "fp16", "fp32", "int8")
LONG_MODES = ("chunk", "truncate")
FINETUNE_METHODS = ("full", "setfit")
TASKS = ("auto", "single", "multi")  # extract.labels.TASKS, without importing pandas for --help
LABEL_COLS = ("label", "labels")  # the default label column: label, else labels (extract.labels.LABEL_COLS)


@dataclass(frozen=True)
class EncoderOptions:
    """How texts become vectors (``BertEncoder``'s parameters) and where vectors are cached."""

    model: str = DEFAULT_MODEL
    pooling: str = "mean"
    layers: str = "-1"
    max_length: int = 256
    normalize: bool = True
    precision: str = "auto"
    long: str = "truncate"
    batch_size: int = 128
    device: str = "auto"
    cache_dir: str | None = None
    shard_size: int = 2048
    window: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class DataOptions:
    """How a file or DataFrame becomes texts (and labels).

    ``label_col``: a column name, or names of which the first a file has is read (the default: ``label``, else
    ``labels``). Multi-label data (one tuple of labels per row): label cells that are lists, text cells split
    on ``label_sep``, or one-hot columns ``label_cols`` (``a,b,c`` or a glob ``emo_*``); ``task`` auto, single
    or multi (``extract/labels.py``).
    """

    text_col: str = "text"
    pair_col: str | None = None
    label_col: str | tuple[str, ...] = LABEL_COLS
    label_sep: str | None = None
    label_cols: str | None = None
    task: str = "auto"
    encoding: str = "utf-8"
    drop_empty: bool = False
    test_size: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class SelectOptions:
    """How a head's setting or the best candidate is chosen."""

    select: str | None = None
    cv: int = 3
    class_weight: str | None = None
    tune_threshold: bool = False


@dataclass(frozen=True)
class EmbedConfig(EncoderOptions, DataOptions):
    engine: str = "local"
    address: str | None = None
    num_workers: int | None = None
    gpus_per_worker: float | None = None
    block_size: int | None = None


@dataclass(frozen=True)
class FitConfig(EncoderOptions, DataOptions, SelectOptions):
    head: str = "logreg"
    features: str | None = None  # None: the view `pooling` and `layers` name
    track: str | bool | None = None  # MLflow tracking URI; True or "": runs/mlflow.db (bertfeat.tracking)


@dataclass(frozen=True)
class BenchConfig(EncoderOptions, DataOptions, SelectOptions):
    select: str | None = None  # None: accuracy, or macro_f1 for multi-label data
    heads: str | None = None
    features: str | None = None
    tune: bool = True
    budget: float | None = None
    vote: bool = True
    jobs: int | None = None
    samples_per_label: int = 0
    n_experiments: int = 10
    finetune: str | None = None
    epochs: int | None = None  # of each fine-tune bench runs
    # a short fine-tune on the training data: would fine-tuning gain? (bertfeat.probe). None: on for one label
    # per text (within its budget: a fifth of the frozen bench's time, 30 s at most), off for multi-label data
    finetune_probe: bool | None = None
    time_budget: float | None = None  # minutes a --finetune auto fine-tune may take (None: no limit)
    probe_seconds: float | None = None  # the probe's budget (None: a fifth of the frozen bench's time, 30 s at most)
    track: str | bool | None = None  # MLflow tracking URI; True or "": runs/mlflow.db (bertfeat.tracking)


@dataclass(frozen=True)
class LabelsConfig(EncoderOptions, DataOptions):
    """``find_label_issues``: out-of-fold probabilities of one cheap head, cross-validated."""

    head: str = "logreg"
    features: str | None = None  # None: the view `pooling` and `layers` name
    cv: int = 5
    jobs: int | None = None


@dataclass(frozen=True)
class FinetuneConfig(DataOptions):
    method: str = "full"
    model: str = DEFAULT_MODEL
    epochs: int | None = None
    lr: float | None = None
    train_batch_size: int | None = None
    max_length: int = 128
    val_size: float | None = None
    max_pairs: int | None = None
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True


def make(cls, given: dict, where: str = ""):
    """``cls(**given)``, with an unknown name raised as a ``ConfigError`` listing the valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ConfigError(f"{where}unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"expected some of: {', '.join(sorted(names))}")
    return check(cls(**_aliased(given)))


def _aliased(given: dict) -> dict:
    if given.get("select") in SCORE_ALIASES:
        given = {**given, "select": SCORE_ALIASES[given["select"]]}
    return given


def from_namespace(cls, args):
    """The config a parsed command line asks for: every field the namespace has, by name."""
    # a flag left unset (None) takes the field's default: `predict --precision` and `fit --precision` share
    # one flag whose unset value means "as trained" there and "auto" here
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    if hasattr(args, "quiet"):
        given["progress"] = not args.quiet
    return check(cls(**_aliased(given)))


# The BertEncoder parameters an options dataclass holds (its cache_dir and progress are the command's).
ENCODER_KEYS = ("model", "pooling", "layers", "max_length", "normalize", "precision", "long", "batch_size", "device")


def encoder_params(config) -> dict:
    """The ``BertEncoder`` parameters a config holds."""
    return {k: getattr(config, k) for k in ENCODER_KEYS if hasattr(config, k)}


def _positive(config, name: str, allow_none: bool = False) -> None:
    value = getattr(config, name, 1)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"bad {name}={value!r}; expected a positive whole number")


def _check_labels(config) -> None:
    if config.task not in TASKS:
        raise ConfigError(f"unknown task={config.task!r}; expected one of: {', '.join(TASKS)}")
    if config.label_sep is not None and (not isinstance(config.label_sep, str) or not config.label_sep):
        raise ConfigError(f"bad label_sep={config.label_sep!r}; expected the text between labels, e.g. ';'")
    if config.label_cols is not None and (not isinstance(config.label_cols, str) or not config.label_cols.strip()):
        raise ConfigError(f"bad label_cols={config.label_cols!r}; expected one-hot column names a,b,c or a "
                          "prefix glob such as 'emo_*'")
    multi = [f"{name}={getattr(config, name)!r}" for name in ("label_sep", "label_cols") if getattr(config, name)]
    if config.task == "single" and multi:
        raise ConfigError(f"task='single' with {multi[0]}: that reads several labels per row; pass task='multi' "
                          "or 'auto', or drop it")
    if config.label_cols and config.label_sep is not None:
        raise ConfigError(f"label_sep={config.label_sep!r} with label_cols={config.label_cols!r}: one-hot columns "
                          "hold 1/0, not separated labels; pass only one")
    if config.label_cols and isinstance(config.label_col, str):
        raise ConfigError(f"label_col={config.label_col!r} with label_cols={config.label_cols!r}: the labels come "
                          "from one or the other; pass only one")


def check(config):
    """Values wrong whatever the data, checked before a file is read or a model loads."""
    if isinstance(config, DataOptions):
        try:
            codecs.lookup(config.encoding)
        except (LookupError, TypeError):
            raise ConfigError(f"unknown encoding={config.encoding!r}; pass a Python codec name such as utf-8, "
                              "latin-1 or cp1252") from None
        if not isinstance(config.test_size, (int, float)) or not 0 < config.test_size < 1:
            raise ConfigError(f"bad test_size={config.test_size!r}; expected a share between 0 and 1, e.g. 0.2")
        _check_labels(config)
    if isinstance(config, EncoderOptions):
        for name in ("max_length", "batch_size", "shard_size"):
            _positive(config, name)
        _positive(config, "window", allow_none=True)
    if isinstance(config, SelectOptions):
        if config.select is not None and config.select not in SCORES:
            raise ConfigError(f"unknown select={config.select!r}; expected one of: "
                              f"{', '.join(SCORES + tuple(SCORE_ALIASES))}")
        if isinstance(config.cv, bool) or not isinstance(config.cv, int) or config.cv < 2:
            raise ConfigError(f"bad cv={config.cv!r}; expected 2 or more folds")
        if config.class_weight not in (None, "balanced"):
            raise ConfigError(f"bad class_weight={config.class_weight!r}; expected None or 'balanced'")
    if isinstance(config, BenchConfig):
        if config.samples_per_label < 0:
            raise ConfigError(f"bad samples_per_label={config.samples_per_label}; expected a positive number of "
                              "training samples per label (0: the normal bench)")
        if config.samples_per_label and config.n_experiments < 1:
            raise ConfigError(f"bad n_experiments={config.n_experiments}; expected 1 or more (default 10)")
    if getattr(config, "track", None) not in (None, True, False) and not isinstance(config.track, str):
        raise ConfigError(f"bad track={config.track!r}; expected an MLflow tracking URI, True (runs/mlflow.db) "
                          "or None")
    if isinstance(config, LabelsConfig):
        _positive(config, "cv")
        if config.cv < 2:
            raise ConfigError(f"bad cv={config.cv!r}; expected 2 or more folds")
    if isinstance(config, FinetuneConfig):
        _positive(config, "max_pairs", allow_none=True)
        _positive(config, "epochs", allow_none=True)
        _positive(config, "train_batch_size", allow_none=True)
    return config


def replace(config, **changes):
    return check(dataclasses.replace(config, **changes))


def as_dict(config) -> dict:
    return dataclasses.asdict(config)


__all__ = ["BenchConfig", "EmbedConfig", "FinetuneConfig", "FitConfig", "LabelsConfig", "field"]
