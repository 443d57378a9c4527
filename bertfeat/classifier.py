"""``TextClassifier``: a head on frozen encoder vectors, shaped like a scikit-learn classifier.

``TextClassifier(head="svm", features="mean+max").fit(texts, labels)`` embeds the texts through the
vector cache and fits the head; ``bertfeat.load(dir)`` returns a fitted one from a model folder. It
follows the estimator contract: ``__init__`` only stores its parameters (so ``clone``, ``get_params`` and
``GridSearchCV`` work), learned state ends in ``_``, and it pickles and deep-copies (the lock and the loaded
encoder are process state, rebuilt on first use).
"""
from __future__ import annotations

import logging
import threading

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from bertfeat.errors import ConfigError, DataError
from bertfeat.extract.cells import is_multi

log = logging.getLogger("bertfeat")


class TextClassifier(ClassifierMixin, BaseEstimator):
    """A classifier head on the vectors of a frozen BERT-family encoder.

    Parameters
    ----------
    head : str, default="logreg"
        A registered head: knn, lda, lgbm, logreg, mlp, sgd, svm, torch, vote.
    features : str or None, default=None
        Feature view: a pooling, ``+`` to concatenate, ``@layers`` to pick layers (``mean+max``,
        ``cls@-2``). None: the view the encoder's ``pooling`` and ``layers`` name.
    encoder : BertEncoder or None, default=None
        Model and settings the vectors come from; None: ``BertEncoder()`` (all-MiniLM-L6-v2, offline).
    select : {"accuracy", "macro_f1"} or None, default=None
        Choose the head's grid setting by this cross-validated score (and temperature-scale its
        probabilities on out-of-fold predictions); None fits the head's defaults.
    cv : int, default=3
        Folds for ``select``.
    class_weight : {"balanced"} or None, default=None
        Weigh every class equally (class weights where the head has them, else oversampling).
    tune_threshold : bool, default=False
        Binary tasks with ``select="macro_f1"``: tune the decision threshold on out-of-fold probabilities.
    seed : int, default=0
    cache_dir : str, None or False, default=None
        The vector cache: None is the default one ($BERTFEAT_CACHE or ~/.cache/bertfeat), False none at all.
        ``fit`` reads and fills it; ``predict`` only reads it unless ``cache_write`` is set.
    cache_write : bool, default=False
        Let ``predict`` store the vectors it computes (a server's traffic would otherwise grow the cache).
    progress : bool, default=False
        A progress bar on stderr (tqdm: a terminal or a notebook) while embedding.
    """

    def __init__(self, head="logreg", features=None, encoder=None, select=None, cv=3, class_weight=None,
                 tune_threshold=False, seed=0, cache_dir=None, cache_write=False, progress=False):
        self.head = head
        self.features = features
        self.encoder = encoder
        self.select = select
        self.cv = cv
        self.class_weight = class_weight
        self.tune_threshold = tune_threshold
        self.seed = seed
        self.cache_dir = cache_dir
        self.cache_write = cache_write
        self.progress = progress

    # -- process state: never pickled -------------------------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_lock", None)
        state.pop("_embedder", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def _embed_lock(self):
        if "_lock" not in self.__dict__:
            self.__dict__["_lock"] = threading.Lock()
        return self.__dict__["_lock"]

    # -- settings ---------------------------------------------------------------------------------
    def base_encoder(self):
        from bertfeat.extract import BertEncoder

        if self.encoder is None:
            return BertEncoder()
        if not isinstance(self.encoder, BertEncoder):
            raise ConfigError(f"bad encoder={self.encoder!r}; expected a bertfeat.BertEncoder or None")
        return self.encoder

    def view(self) -> str:
        """The feature view, as ``features`` spells it (derived from the encoder when None)."""
        if self.features:
            return self.features
        base = self.base_encoder()
        return base.pooling if base.layers == "-1" else f"{base.pooling}@{base.layers}"

    def cache_root(self) -> str | None:
        from bertfeat.cache import default_cache_dir

        if self.cache_dir is False:
            return None
        return self.cache_dir or default_cache_dir()

    def encoders(self) -> list:
        """The encoders this head's vectors come from, at the encoder's precision, device and batch size."""
        from bertfeat.extract import BertEncoder
        from bertfeat.model_folder import encoder_folder

        if not hasattr(self, "manifest_"):
            return self._fresh_encoders()
        base = self.base_encoder()

        local = encoder_folder(self.folder_, self.manifest_)
        runtime = {k: getattr(base, k) for k in ("precision", "device", "batch_size")}
        return [BertEncoder(**{**params, **({"model": local} if local else {})}, **runtime)
                for params in self.manifest_["encoders"]]

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, X, y):
        """Embed ``X`` (through the cache) and fit the head on the vectors.

        Parameters
        ----------
        X : list of str, pandas Series, or (text, pair) rows
            Texts as ``BertEncoder.transform`` takes them.
        y : sequence of labels, or of label lists
            One per text; labels keep their type (integers come back from ``predict`` as integers). A list
            (tuple, set) of labels per text makes the task multi-label: thresholds are then chosen by CV.
        """
        from bertfeat.classify.heads import head_info
        from bertfeat.extract.encoder import split_inputs

        info = head_info(self.head)
        texts, pairs = split_inputs(X)
        labels = _labels(y, len(texts))
        encoders = self._fresh_encoders()
        if info.streaming and not is_multi(labels):
            self._fit_streaming(encoders, texts, pairs, labels)
        else:
            vectors = self._vectors(encoders, texts, pairs, write=True)
            self.fit_vectors(vectors, labels, encoders, pair=pairs is not None)
        return self

    def _vectors(self, encoders, texts, pairs, write: bool) -> np.ndarray:
        from bertfeat.extract.pipeline import Embedder

        done = Embedder(encoders, self.cache_root(), write=write)(texts, pairs, progress=self.progress)
        self.embedding_ = done
        return np.hstack(done.vectors)

    def _fresh_encoders(self):
        from bertfeat.extract import feature_encoders

        return feature_encoders(self.view(), self.base_encoder())

    def fit_vectors(self, X, y, encoders, pair: bool = False, columns: dict | None = None):
        """Fit the head on vectors already computed by ``encoders`` (in their order, concatenated).

        ``columns``: the data columns a model folder's ``predict --data`` reads (text_col, label_col, pair_col).
        """
        from bertfeat.classify.heads import balanced, head_info

        info = head_info(self.head)
        if self.class_weight and info.streaming:
            raise ConfigError(f"class_weight with head={self.head}: a head trained shard by shard cannot weigh "
                              "classes by counts it has not seen; use head='logreg'")
        if self.tune_threshold and self.select != "macro_f1":
            raise ConfigError("tune_threshold tunes the decision threshold for macro-F1: add select='macro_f1'")
        if is_multi(y):
            self.head_, self.selection_ = self._multi(X, y)
            self._finish(encoders, pair, columns)
            return self
        from bertfeat.options import SINGLE_SCORES

        if self.select and self.select not in SINGLE_SCORES:
            raise ConfigError(f"select={self.select!r} scores sets of labels; with one label per text pick one of "
                              f"{', '.join(SINGLE_SCORES)}")
        y = np.asarray(y)
        self.selection_ = {}
        if not self.select:
            head = info.make(self.seed)
            head = balanced(self.head, head, self.seed) if self.class_weight else head
            self.head_ = head.fit(X, y)
        else:
            self.head_, self.selection_ = self._selected(X, y)
        self._finish(encoders, pair, columns)
        return self

    def _selected(self, X, y):
        """The grid setting with the best CV ``select`` score, temperature-scaled on out-of-fold probabilities
        (and, binary, ``tune_threshold``'s threshold), as bench chooses."""
        from bertfeat.classify.bench import run_bench
        from bertfeat.classify.tuning import fold_count

        cv = fold_count(y, self.cv, "the training set")
        # run_bench scores a test set; the training rows stand in for it, their scores unused
        _, (best, head, _, _), info = run_bench({"features": (X, X)}, y, y, [self.head], cv, True, self.seed,
                                                n_jobs=1, select=self.select, class_weight=self.class_weight,
                                                ensemble=False, tune_threshold=self.tune_threshold)
        return head, {"select": self.select, "cv": cv, "cv_score": best.cv_score, "params": best.params,
                      "temperature": best.temperature, "threshold": info.get("threshold")}

    def check_multi(self) -> None:
        """The settings multi-label data cannot take, refused in one line (before anything is embedded)."""
        from bertfeat.classify.thresholds import SELECT

        if self.select and self.select not in SELECT:
            raise ConfigError(f"bad select={self.select!r} for multi-label data; expected one of {', '.join(SELECT)}")
        if self.class_weight or self.tune_threshold:
            raise ConfigError("class_weight and tune_threshold are single-label options; multi-label data gets "
                              "per-label thresholds chosen by CV instead")

    def _multi(self, X, y):
        """Multi-label: the head's CV out-of-fold probabilities choose its per-label calibration and decision
        rule (``classify/thresholds.py``), then it is refit on every row."""
        from bertfeat.classify.multibench import cross_validate
        from bertfeat.classify.multilabel import MultiLabel, indicator, multi_head
        from bertfeat.classify.thresholds import DEFAULT_SELECT

        self.check_multi()
        select = self.select or DEFAULT_SELECT
        Y, classes = indicator(y)
        cv = max(2, min(self.cv, len(Y)))
        best = cross_validate({"features": X}, Y, [self.head], cv, self.seed, select, n_jobs=1)[0]
        head = MultiLabel(multi_head(self.head, self.seed).fit(X, Y), classes, best["calibration"],
                          best["choice"]["thresholds"], best["choice"]["at_least_one"])
        return head, {"select": select, "cv": cv, "cv_score": best["cv_score"], "rule": best["choice"]["rule"],
                      "at_least_one": best["choice"]["at_least_one"], "rules": best["choice"]["rules"]}

    def _fit_streaming(self, encoders, texts, pairs, labels, columns: dict | None = None):
        from bertfeat.cache import text_keys
        from bertfeat.classify.heads import head_info
        from bertfeat.classify.stream import fit_streaming
        from bertfeat.extract.pipeline import Embedder

        if len(encoders) != 1:
            raise ConfigError(f"head={self.head} streams one feature view from the cache; '{self.view()}' has "
                              f"{len(encoders)}: pass a single pooling, e.g. features='mean'")
        if self.cache_root() is None:
            raise ConfigError(f"head={self.head} reads its training vectors from the cache shard by shard: "
                              "pass a cache_dir (or None for the default one), not False")
        embedder = Embedder(encoders, self.cache_root())
        self.embedding_ = embedder(texts, pairs, self.progress, load=False)
        head = head_info(self.head).make(self.seed)
        self.head_ = fit_streaming(head, embedder.stores[0], text_keys(texts, pairs), labels, seed=self.seed)
        self.selection_ = {}
        self._finish(encoders, pairs is not None, columns)

    def _finish(self, encoders, pair: bool, columns: dict | None):
        from bertfeat.model_folder import model_manifest

        columns = columns or {"text_col": "text", "label_col": "label", "pair_col": "pair" if pair else None}
        self.manifest_ = model_manifest(encoders, self.head, self.view(), self.head_.classes_, **columns)
        if _is_multi_head(self.head_):
            self.manifest_.update(task="multi-label", thresholds=[float(t) for t in self.head_.thresholds])
        self.classes_ = np.asarray(self.head_.classes_)
        self.folder_ = None
        self.run_ = {}
        self.__dict__.pop("_embedder", None)

    # -- prediction -------------------------------------------------------------------------------
    @property
    def multi_label(self) -> bool:
        """Whether this model gives each text a set of labels (fit on label lists)."""
        check_is_fitted(self, "head_")
        return _is_multi_head(self.head_)

    def predict_proba(self, X, pairs=None) -> np.ndarray:
        """Class probabilities, one row per text, columns in ``classes_`` order (multi-label: each label's own
        probability, calibrated; a row does not sum to 1).

        Parameters
        ----------
        X : list of str, pandas Series, or (text, pair) rows
        pairs : list of str or None
            Second texts, one per text in ``X`` (a model fit on pairs needs them, here or as rows).
        """
        check_is_fitted(self, "head_")
        texts, pairs = self._inputs(X, pairs)
        if not texts:
            return np.empty((0, len(self.classes_)))
        return self.head_.predict_proba(self.transform_texts(texts, pairs))

    def predict(self, X, pairs=None, threshold: float | None = None):
        """The most probable label of each text, of the labels' own type; arguments as ``predict_proba``.

        Multi-label: a list of labels per text (possibly empty), those whose probability reaches their
        threshold (the ones CV chose, or ``threshold`` for every label).
        """
        return self.labels_of(self.predict_proba(X, pairs), threshold)

    def labels_of(self, proba: np.ndarray, threshold: float | None = None):
        """``predict``'s answer from ``predict_proba``'s probabilities."""
        check_is_fitted(self, "head_")
        if not self.multi_label:
            if threshold is not None:
                raise ConfigError("threshold is for multi-label models; this one gives one label per text")
            return self.classes_[proba.argmax(1)]
        from bertfeat.classify.multilabel import decide

        if threshold is not None and not 0 <= threshold <= 1:
            raise ConfigError(f"bad threshold={threshold}; expected a probability between 0 and 1")
        rule = (self.head_.thresholds, self.head_.at_least_one) if threshold is None else (threshold, False)
        return [[c.item() if hasattr(c, "item") else c for c in self.classes_[row]] for row in decide(proba, *rule)]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy; multi-label: subset accuracy (every label of a text right), as scikit-learn scores it."""
        if not self.multi_label:
            return super().score(X, y, sample_weight)
        from bertfeat.classify.multilabel import indicator

        truth, _ = indicator([tuple(row) for row in y], self.classes_)
        pred, _ = indicator([tuple(row) for row in self.predict(X)], self.classes_)
        return float(np.average((truth == pred).all(1), weights=sample_weight))

    def transform_texts(self, texts, pairs=None) -> np.ndarray:
        """The head's input vectors for ``texts``: every encoder of the view, concatenated."""
        from bertfeat.extract.pipeline import Embedder

        with self._embed_lock():  # one model load, one forward at a time (it already uses every core)
            embedder = self.__dict__.get("_embedder")
            if embedder is None:
                embedder = Embedder(self.encoders(), self.cache_root(), write=bool(self.cache_write))
                self.__dict__["_embedder"] = embedder
            return np.hstack(embedder(texts, pairs, progress=self.progress).vectors)

    @property
    def pair_col(self) -> str | None:
        check_is_fitted(self, "manifest_")
        return self.manifest_.get("pair_col")

    def _inputs(self, X, pairs):
        from bertfeat.extract.encoder import split_inputs

        texts, row_pairs = split_inputs(X)
        if pairs is not None:
            if row_pairs is not None:
                raise ConfigError("pairs given twice: as (text, pair) rows and as pairs=; pass one")
            row_pairs = [str(p) for p in pairs]
            if len(row_pairs) != len(texts):
                raise DataError(f"{len(texts)} texts but {len(row_pairs)} pairs; give one pair per text")
        if self.pair_col and row_pairs is None and texts:
            raise DataError(f"this model was trained on text pairs (pair column '{self.pair_col}'): give a pair "
                            "for every text (predict --pair, or (text, pair) rows / pairs= in Python)")
        if not self.pair_col and row_pairs is not None:
            raise DataError("this model was trained on single texts, not pairs; pass texts only")
        return texts, row_pairs

    # -- model folders ----------------------------------------------------------------------------
    def save(self, path: str) -> str:
        """Write this fitted model as a model folder at ``path`` (new or empty); returns its absolute path.
        ``bertfeat predict --model-dir`` and ``bertfeat.load`` read it."""
        from bertfeat.model_folder import save_classifier

        check_is_fitted(self, "head_")
        return save_classifier(self, path)


def _is_multi_head(head) -> bool:
    from bertfeat.classify.multilabel import MultiLabel

    return isinstance(head, MultiLabel)


def _labels(y, n: int) -> list:
    """Labels as a list of the user's values (numpy scalars become Python ones); a list (tuple, set, array)
    of labels per row: one sorted tuple per row (multi-label)."""
    from bertfeat.extract.cells import is_list
    from bertfeat.extract.labels import multi_labels

    labels = [v.item() if isinstance(v, np.generic) else v for v in (list(y) if y is not None else [])]
    if len(labels) != n:
        raise DataError(f"{n} texts but {len(labels)} labels; give one label per text")
    if any(is_list(v) for v in labels):
        return multi_labels(labels, False, None, "the labels", 0, None, "auto", typed=True)
    bad = next((i for i, v in enumerate(labels) if v is None or (isinstance(v, float) and v != v)), None)
    if bad is not None:
        raise DataError(f"label of row {bad} is missing ({labels[bad]!r}); give every text a label")
    return labels
