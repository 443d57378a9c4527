"""``bertfeat.bench``: feature views x heads chosen by cross-validation, one table, the best model.

``run(config, train, test)`` returns a ``BenchResult``; it prints nothing and writes nothing until
``BenchResult.save(dir)`` (which writes what ``bench --out`` writes: ``best-model/``, results.json/.md
and the plots).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field

from bertfeat import options
from bertfeat.errors import ConfigError

log = logging.getLogger("bertfeat")


@dataclass(frozen=True)
class BenchResult:
    """What one bench found.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per candidate (the rows of results.md); ``round`` says whether a row was fully
        cross-validated ("full") or stopped after its first fold by successive halving ("screened"); the
        screened rows come last, their first fold's score in ``first_fold_score`` (``cv_score`` NaN).
    best : TextClassifier or None
        The candidate with the best cross-validated score, fitted on the whole training set (None in the
        MTEB protocol, which keeps no model).
    config : BenchConfig
    seconds : float
    """

    best: object
    config: options.BenchConfig
    seconds: float
    rows: list = field(default_factory=list)
    best_row: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    embedding: dict = field(default_factory=dict)
    mteb: dict | None = None
    _report: dict = field(default_factory=dict, repr=False)
    # training rows whose label looks wrong (classify/label_issues.py; label_issues.csv), most likely first,
    # and exact / near duplicates within train and between train and test (classify/duplicates.py)
    label_issues: object = None
    duplicates: dict = field(default_factory=dict)
    # would fine-tuning the encoder gain over the frozen best (bertfeat/probe.py); None when not run
    finetune_probe: dict | None = None

    @property
    def table(self):
        return frame(self.rows)

    def save(self, path: str) -> str:
        """Write ``path/best-model`` (a model folder) and the report (results.json, results.md, plots);
        returns the absolute path. ``path`` must be new or empty."""
        from bertfeat.classify import report, report_multi
        from bertfeat.steps import check_out

        if self.best is None:
            raise ConfigError("this bench kept no model (MTEB protocol): nothing to save")
        check_out(path)
        self.best.save(os.path.join(path, "best-model"))
        r = self._report
        write = report_multi.write_report if r["context"].get("task") == "multi-label" else report.write_report
        write(path, self.rows, self.best_row, r["metrics"], r["context"], r["probas"],
              list(map(str, self.best.classes_)), r["y_test"], r.get("texts"), self._facts(path))
        if self.label_issues is not None:
            from bertfeat.cache import atomic_write

            atomic_write(os.path.join(path, "label_issues.csv"),
                         lambda fh: fh.write(self.label_issues.to_csv(index=False).encode()))
        return os.path.abspath(path)

    def _facts(self, path: str) -> dict:
        """What results.html says about the run beyond the table: data files (size, sha256), the encoder's
        model_id, versions, seed and the saved model folder's size."""
        import json

        from bertfeat.cache import sha256_file

        context, model_dir = self._report["context"], os.path.join(path, "best-model")
        files = {role: {"bytes": os.path.getsize(context[role]), "sha256": sha256_file(context[role])}
                 for role in ("train", "test") if isinstance(context.get(role), str) and os.path.isfile(context[role])}
        with open(os.path.join(model_dir, "manifest.json"), encoding="utf-8") as fh:
            model_id = json.load(fh).get("model_id")
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(model_dir) for f in names)
        run = getattr(self.best, "run_", {}) or {}
        return {"files": files, "model_id": model_id, "versions": run.get("versions"), "seed": self.config.seed,
                "created": run.get("created"), "model_bytes": size}

    def as_dict(self) -> dict:
        """The JSON ``bench --json`` prints (without the folder paths, which ``save`` adds)."""
        if self.mteb is not None:
            return self.mteb
        return {"results": self.rows, "best": self.best_row, "selection": self.selection,
                "seconds": round(self.seconds, 2), "embedding": self.embedding, "duplicates": self.duplicates,
                "label_issues": 0 if self.label_issues is None else len(self.label_issues),
                "finetune_probe": self.finetune_probe}


def frame(rows: list[dict]):
    """The rows as a DataFrame, in the table's order (fully scored rows first), with a ``round`` column:
    "full" or "screened"; a screened row's one-fold score is in ``first_fold_score``, its ``cv_score`` NaN."""
    import pandas as pd

    from bertfeat.classify.report import screened

    df = pd.DataFrame(rows)
    if len(df):
        stopped = [screened(r) for r in rows]
        df.insert(2, "round", ["screened" if s else "full" for s in stopped])
        # a screened row's score is its first fold's, not a CV mean: it gets a column of its own
        df.insert(4, "first_fold_score", df["cv_score"].where(stopped))
        df["cv_score"] = df["cv_score"].mask(stopped)
    return df


def run(config: options.BenchConfig, train, test) -> BenchResult:
    """The bench of ``config`` on ``train`` (and ``test``: tables as ``inputs.labelled`` returns them)."""
    from bertfeat.classify.bench import mteb_protocol, run_bench
    from bertfeat.classify.heads import default_heads, head_info
    from bertfeat.classify.selection import DEFAULT_VIEWS
    from bertfeat.classify.tuning import fold_count
    from bertfeat.finetuning import chosen, finetune_methods, finetune_rows, mteb_finetune
    from bertfeat.steps import default_view, embed_views, list_option, run_record

    from bertfeat.extract.cells import is_multi

    multi = is_multi(train.labels)
    if multi:
        from bertfeat.benching_multi import check_multi

        check_multi(config)
    elif config.select is None:  # the single-label default
        config = dataclasses.replace(config, select="accuracy")
    elif config.select not in options.SINGLE_SCORES:
        raise ConfigError(f"select={config.select!r} scores sets of labels; with one label per text pick one of "
                          f"{', '.join(options.SINGLE_SCORES)}")
    halving = not config.heads and not config.features  # the default: views x heads by successive halving
    heads = list_option(config.heads, "heads") if config.heads else default_heads()
    for name in heads if not multi else []:  # multi-label heads are checked by their own registry
        head_info(name)
    auto = config.finetune == "auto"  # the probe decides whether a full fine-tune runs
    ft_methods = [] if auto else finetune_methods(config.finetune)
    if config.features:
        specs = list_option(config.features, "features")
    else:  # the candidate views, unless pooling/layers name another one
        specs = list(DEFAULT_VIEWS) if default_view(config) == "mean" else [default_view(config)]
    if config.samples_per_label:
        specs = specs[:1]  # the MTEB protocol scores one view: embedding the others would be wasted
    texts = train.texts + test.texts
    pairs = train.pairs + test.pairs if train.pairs is not None else None
    cv = config.cv
    if not config.samples_per_label and not multi:  # before embedding: a class too small to cross-validate fails
        cv = fold_count(train.labels, config.cv, train.source)
    t0 = time.perf_counter()
    arrays, views, emb = embed_views(config, specs, texts, pairs)
    n = len(train.texts)
    split = {spec: (a[:n], a[n:]) for spec, a in arrays.items()}
    duplicates = _duplicates(split, train, test)
    if multi:
        from bertfeat.benching_multi import run_multi

        return run_multi(config, train, test, split, views, emb, t0, duplicates)
    if config.samples_per_label:
        X_train, X_test = split[specs[0]]
        result = mteb_protocol(X_train, train.labels, X_test, test.labels, config.samples_per_label,
                               config.n_experiments, config.seed)
        result["features"] = specs[0]
        if ft_methods:  # SetFit on the very samples of each experiment
            result["finetune"] = mteb_finetune(config, ft_methods, train, test)
        return BenchResult(None, config, time.perf_counter() - t0, embedding=emb.summary(), mteb=result,
                           duplicates=duplicates)

    def progress(r):
        log.info("%-7s %-12s cv %.4f  test acc %.4f  macro-F1 %.4f  (%.1f s)", r.head, r.features, r.cv_score,
                 r.accuracy, r.macro_f1, r.fit_seconds)

    results, (best, best_head, best_metrics, best_probas), selection = run_bench(
        split, train.labels, test.labels, heads, cv, config.tune, config.seed, progress, config.jobs,
        select=config.select, class_weight=config.class_weight, halving=halving, budget=config.budget,
        ensemble=config.vote and halving, tune_threshold=config.tune_threshold)
    rows = [r.as_dict() for r in results]
    oof = selection.pop("oof")  # the chosen candidate's out-of-fold probabilities: label issues, the probe
    issues = _label_issues(oof, train)
    probe = None
    if config.finetune_probe is not False or auto:
        from bertfeat.extract.model import resolve_device
        from bertfeat.probe import auto_methods, run_probe

        # on a GPU a full fine-tune takes minutes, not an hour: there a probe that recommends one runs it
        auto = auto or (config.finetune is None and resolve_device(config.device).startswith("cuda"))

        X_mean = split["mean"][0] if "mean" in split else None  # the probe's linear layer starts on them
        probe = run_probe(config, train, X_mean, best.cv_score, time.perf_counter() - t0, test.source, oof)
        if auto:
            ft_methods, config = auto_methods(probe, config)
    won = None
    if ft_methods:  # marked fine_tuned; in the table, JSON, results.md and plots
        tuned = finetune_rows(config, ft_methods, train, test, oof)
        rows += [t.row for t in tuned]
        # a candidate dropped after round 1 has no test scores (None): it stays last, as in the frozen table
        rows.sort(key=lambda r: (r["macro_f1"] is None, -(r["macro_f1"] or 0.0), r["head"], r["features"]))
        won = chosen(tuned)  # a full fine-tune that beat the frozen best on its held-out rows
    seconds = time.perf_counter() - t0
    if best.features not in views:  # a soft vote reads the union of its members' views
        from bertfeat.extract import feature_encoders
        from bertfeat.steps import base_encoder

        views[best.features] = feature_encoders(best.features, base_encoder(config))
    clf = _fitted(config, best_head, best.head, best.features, views[best.features], pairs is not None)
    best_row = best.as_dict()
    if won is not None:  # best-model is then the fine-tuned folder, its encoder with it
        clf, best_row, best_metrics, best_probas = won.model(), won.row, won.metrics, won.probas
    context = {"train": train.source, "test": test.source, "model": config.model, "n_train": n,
               "n_test": len(test.texts), "cv": cv, "tune": config.tune, "select": config.select,
               "class_weight": config.class_weight, "selection": selection, "bench_seconds": seconds,
               "embedding": emb.summary(), "duplicates": duplicates, "finetune_probe": probe}
    summary = {"metrics": {k: best_metrics[k] for k in ("accuracy", "macro_f1")}, "bench": rows,
               "n_train": n, "n_test": len(test.texts)}
    clf.run_ = run_record("bench", config, emb, summary)
    return BenchResult(clf, config, seconds, rows, best_row, selection, emb.summary(),
                       _report={"metrics": best_metrics, "context": context, "probas": best_probas,
                                "y_test": test.labels, "texts": test.texts},
                       label_issues=issues, duplicates=duplicates, finetune_probe=probe)


def data_rows(table) -> list[int]:
    """Each row's 0-based data row in its file, header not counted (a DataFrame's or list's position)."""
    # Table.rows counts file rows from 1 with the header, so a file's first data row is 2; a DataFrame's
    # or a (texts, labels) pair's table (source "the train ...") holds 0-based positions already
    offset = 0 if table.source.startswith(("the train", "the test")) else 2
    return [r - offset for r in table.rows]


def _duplicates(split: dict, train, test) -> dict:
    """Exact and near duplicates on the narrowest view's vectors (bench has them already), with a warning."""
    from bertfeat.classify.duplicates import find_duplicates

    t0 = time.perf_counter()
    X_train, X_test = min(split.values(), key=lambda a: a[0].shape[1])
    found = find_duplicates(X_train, X_test, _keys(train), _keys(test), train.labels)
    train_rows, test_rows = data_rows(train), data_rows(test)
    for p in found["pairs"]:  # positions -> data rows in the files, as label_issues.csv gives them
        p["train_row"] = train_rows[p["train_row"]]
        p["other_row"] = (train_rows if p["kind"].startswith("train") else test_rows)[p["other_row"]]
    found["seconds"] = round(time.perf_counter() - t0, 3)
    if not found["train_near_checked"]:
        log.info("duplicates: near ones within the training set not counted (%d rows; the cost grows as rows "
                 "squared); exact ones, and test rows near a training row, are", len(X_train))
    if found["train_exact"] + found["train_near"] + found["test_exact"] + found["test_near"]:
        log.warning("duplicates: %d test rows repeat a training row (%d exactly, %d at cosine >= %g): test scores "
                    "may be optimistic; %d training rows repeat an earlier one (%d exactly, %d near; %d and %d with "
                    "another label)", found["test_exact"] + found["test_near"], found["test_exact"],
                    found["test_near"], found["threshold"], found["train_exact"] + found["train_near"],
                    found["train_exact"], found["train_near"], found["train_conflicting"],
                    found["train_near_conflicting"])
    return found


def _keys(table) -> list:
    """What makes two rows the same: the text, or the text and its pair."""
    return list(zip(table.texts, table.pairs)) if table.pairs is not None else table.texts


def _label_issues(oof, train):
    """label_issues.csv's rows from the chosen candidate's out-of-fold probabilities."""
    import numpy as np

    from bertfeat.classify.label_issues import issue_frame

    t0 = time.perf_counter()
    issues = issue_frame(oof, train.labels, np.unique(np.asarray(train.labels)), train.texts, data_rows(train))
    log.info("label issues: %d training rows look mislabelled (label_issues.csv); %.2f s", len(issues),
             time.perf_counter() - t0)
    return issues


def _fitted(config, head, head_name: str, features: str, encoders, pair: bool):
    """A fitted ``TextClassifier`` around a head bench already fit on ``encoders``' vectors."""
    from bertfeat.classifier import TextClassifier
    from bertfeat.steps import base_encoder

    clf = TextClassifier(head=head_name, features=features, encoder=base_encoder(config), seed=config.seed,
                         cache_dir=config.cache_dir)
    clf.head_ = head
    clf._finish(encoders, pair, {"text_col": config.text_col, "label_col": config.label_col,
                                 "pair_col": config.pair_col, "label_sep": config.label_sep,
                                 "label_cols": config.label_cols})
    return clf


__all__ = ["BenchResult", "run"]
