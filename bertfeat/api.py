"""A trained model folder from Python: ``clf = bertfeat.load("runs/x"); clf.predict(texts)``.

A model folder's manifest keeps two things apart (see README, "Model folders"):

- what the head needs, checked on load: the encoder model and its identity (sha256 over weights,
  tokenizer and config files), pooling, layers, max length, long-text mode, normalization, pair column;
- how the training machine computed the vectors (``trained_with``: precision, runtime, device). Another
  machine computes them at the best precision it has; a difference is one notice, not a refusal.
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

from bertfeat.classify.model_dir import ENCODER_KEYS, MANIFEST
from bertfeat.errors import BertfeatError, ModelFolderError

log = logging.getLogger("bertfeat")

# Cosine against fp32 vectors, as measured (BENCHMARKS.md: bf16 >= 0.9999; int8 >= 0.95, mean ~0.99;
# fp16 is what `auto` accepts on a GPU, >= 0.999).
AGREEMENT = {"bf16": ">= 0.9999", "fp16": ">= 0.999", "int8": "~0.99 (>= 0.95 per text)"}


def model_manifest(encoders, head_name: str, features: str, labels, text_col: str = "text",
                   label_col: str = "label", pair_col: str | None = None) -> dict:
    """The manifest of a head fit on ``encoders``' vectors (``save_model_dir`` adds files and format).

    Parameters
    ----------
    encoders : list of BertEncoder
        The feature view's encoders, in the order their vectors were concatenated.
    head_name : str
        Registry name of the head.
    features : str
        The feature view, as ``fit --features`` spells it.
    labels : sequence
        The head's ``classes_``.
    text_col, label_col, pair_col : str
        Columns ``predict --data`` reads; ``pair_col`` None for single texts.
    """
    from bertfeat.extract import model as model_io

    first = encoders[0]
    device = model_io.resolve_device(first.device)
    precision, runtime = first.resolve_precision(device)
    return {
        "head": head_name, "features": features, "labels": [str(c) for c in labels],
        "text_col": text_col, "label_col": label_col, "pair_col": pair_col,
        "encoders": [{k: e.get_params()[k] for k in ENCODER_KEYS} for e in encoders],
        "model_id": model_io.model_id(model_io.resolve_model_dir(first.model)),
        "trained_with": {"precision": precision, "runtime": runtime, "device": device,
                         "precision_asked": first.precision},
    }


class TextClassifier:
    """A fitted head and the frozen encoder it needs; made by ``load``.

    The encoder loads once, on the first call; calls from several threads (a web server) are safe: the
    forward pass runs under a lock (it already uses every core), the head's arithmetic does not.

    Parameters
    ----------
    head : fitted classifier
    manifest : dict
        As ``model_manifest`` returns it (a loaded folder's manifest).
    precision : {"auto", "fp32", "bf16", "fp16", "int8"}, default="auto"
    device : {"auto", "cpu", "cuda", "mps"}, default="auto"
    batch_size : int, default=128
    cache_dir : str or None, default=None
        Vector cache to read and fill; None computes every vector (what a server usually wants).
    progress : bool, default=False
    run : dict or None
        The folder's ``run.json`` (kept by ``save``).
    folder : str or None
        The model folder it was loaded from: a fine-tuned encoder lives inside it (the manifest's
        ``encoder_folder``, relative to the folder, so the folder can move).
    """

    def __init__(self, head, manifest, precision="auto", device="auto", batch_size=128, cache_dir=None,
                 progress=False, run=None, folder=None):
        self.head = head
        self.manifest = manifest
        self.precision = precision
        self.device = device
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.progress = progress
        self.run = run
        self.folder = folder
        self._lock = threading.Lock()
        self._embedder = None

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray([str(c) for c in self.head.classes_])

    @property
    def pair_col(self) -> str | None:
        return self.manifest.get("pair_col")

    def encoders(self) -> list:
        """The encoders this head's vectors come from, at this classifier's precision and device."""
        from bertfeat.extract import BertEncoder

        local = encoder_folder(self.folder, self.manifest)
        return [BertEncoder(**{**params, **({"model": local} if local else {})}, precision=self.precision,
                            device=self.device, batch_size=self.batch_size) for params in self.manifest["encoders"]]

    def predict_proba(self, X, pairs=None) -> np.ndarray:
        """Class probabilities, one row per text, columns in ``classes_`` order.

        Parameters
        ----------
        X : list of str, pandas Series, or (text, pair) rows
            Rows as ``BertEncoder.transform`` takes them; a pair model needs pairs, here or in ``pairs``.
        pairs : list of str or None
            Second texts, one per text in ``X``.
        """
        texts, pairs = self._inputs(X, pairs)
        if not texts:
            return np.empty((0, len(self.classes_)))
        from bertfeat.extract.pipeline import Embedder

        with self._lock:  # one model load, one forward at a time
            if self._embedder is None:
                self._embedder = Embedder(self.encoders(), self.cache_dir)
            vectors = self._embedder(texts, pairs, progress=self.progress).vectors
        return self.head.predict_proba(np.hstack(vectors))

    def predict(self, X, pairs=None) -> np.ndarray:
        """The most probable label of each text (an array of str); arguments as ``predict_proba``."""
        return self.classes_[self.predict_proba(X, pairs).argmax(1)]

    def save(self, path: str) -> str:
        """Write this model folder to ``path`` (new or empty); returns its absolute path."""
        from bertfeat.classify.model_dir import OWN_KEYS, save_model_dir

        manifest = {k: v for k, v in self.manifest.items() if k not in OWN_KEYS}
        local = encoder_folder(self.folder, self.manifest)
        # a fine-tuned encoder travels with its head, staged with it: the folder appears whole or not at all
        folders = {self.manifest["encoder_folder"]: local} if local else {}
        return save_model_dir(path, self.head, manifest, self.run or {}, folders)

    def _inputs(self, X, pairs):
        from bertfeat.extract.encoder import split_inputs

        texts, row_pairs = split_inputs(X)
        if pairs is not None:
            if row_pairs is not None:
                raise BertfeatError("pairs given twice: as (text, pair) rows and as pairs=; pass one")
            row_pairs = [str(p) for p in pairs]
            if len(row_pairs) != len(texts):
                raise BertfeatError(f"{len(texts)} texts but {len(row_pairs)} pairs; give one pair per text")
        if self.pair_col and row_pairs is None and texts:
            raise BertfeatError(f"this model was trained on text pairs (pair column '{self.pair_col}'): give a "
                                "pair for every text (predict --pair, or (text, pair) rows / pairs= in Python)")
        if not self.pair_col and row_pairs is not None:
            raise BertfeatError("this model was trained on single texts, not pairs; pass texts only")
        return texts, row_pairs


def load(path: str, trust_pickle: bool = False, precision: str | None = None, device: str = "auto",
         batch_size: int = 128, cache_dir: str | None = None, progress: bool = False) -> TextClassifier:
    """Load a model folder written by ``fit``, ``bench`` or ``TextClassifier.save``.

    Parameters
    ----------
    path : str
        The model folder.
    trust_pickle : bool, default=False
        Allow a pickled head (lgbm): unpickling runs code from the file, so only for folders you trust.
        Other heads are plain arrays and load without it.
    precision : {"auto", "fp32", "bf16", "fp16", "int8"} or None, default=None
        None: the precision the model was trained with if it asked for one, else the best this machine
        has (``auto``). When vectors are computed differently from training, one notice is logged.
    device : {"auto", "cpu", "cuda", "mps"}, default="auto"
    batch_size : int, default=128
    cache_dir : str or None, default=None
        Vector cache to read and fill; None computes every vector.
    progress : bool, default=False
        A progress bar on stderr while embedding.

    Returns
    -------
    TextClassifier

    Raises
    ------
    BertfeatError
        A damaged folder, another format, a pickled head without ``trust_pickle``, or an encoder model
        whose weights, tokenizer or config differ from the ones the head was trained on.
    """
    from bertfeat.classify.model_dir import load_model_dir
    from bertfeat.extract import model as model_io

    manifest, head, run = load_model_dir(path, trust_pickle=trust_pickle)
    name = encoder_folder(path, manifest) or manifest["encoders"][0]["model"]
    if model_io.model_id(model_io.resolve_model_dir(name)) != manifest["model_id"]:
        raise BertfeatError(f"model folder {path}: the encoder '{name}' found here is not the one this head was "
                            "trained on (its weights, tokenizer or config changed); fit the head again")
    clf = TextClassifier(head, manifest, device=device, batch_size=batch_size, cache_dir=cache_dir,
                         progress=progress, run=run, folder=os.path.abspath(path))
    clf.precision = precision or _default_precision(manifest["trained_with"], device)
    encoder = clf.encoders()[0]
    encoder.validate()  # a bad precision or batch size fails here, not on the first request
    _notice_precision(path, manifest["trained_with"], encoder)
    return clf


def encoder_folder(path: str | None, manifest: dict) -> str | None:
    """The fine-tuned encoder inside model folder ``path`` (the manifest's ``encoder_folder``, written by
    ``finetune``), as an absolute path; None for a head on a frozen encoder."""
    name = manifest.get("encoder_folder")
    if not name or path is None:
        return None
    root = os.path.abspath(path)
    folder = os.path.join(root, str(name))
    # Only a subfolder of the model folder: an absolute path, '..', a symlink or encoder entries naming
    # another model would load weights from outside what was copied and checked.
    outside = [e["model"] for e in manifest["encoders"] if e["model"] != name]
    if (not isinstance(name, str) or os.path.basename(name) != name or name in (".", "..") or outside
            or os.path.islink(folder) or os.path.dirname(os.path.realpath(folder)) != os.path.realpath(root)):
        raise ModelFolderError(f"model folder {path}: {MANIFEST} names a fine-tuned encoder outside the folder "
                               f"({(outside or [name])[0]!r}); only a subfolder such as 'encoder' is loaded, "
                               "refusing it")
    if not os.path.isdir(folder):
        raise ModelFolderError(f"model folder {path}: its fine-tuned encoder '{name}' is missing; copy the whole "
                               "folder, encoder included")
    return folder


def _default_precision(trained: dict, device: str) -> str:
    """The precision asked for at training if this machine runs it, else ``auto``."""
    from bertfeat.extract import model as model_io

    asked = trained.get("precision_asked", "auto")
    if asked == "auto":
        return "auto"
    resolved = model_io.resolve_device(device)
    if asked == "fp16" and resolved == "cpu":  # a GPU precision: a CPU emulates it, slower than fp32
        return "auto"
    try:
        model_io.runtime_for(asked, resolved)
    except BertfeatError:  # int8 on a GPU, say: the best this machine has instead
        return "auto"
    return asked


def _notice_precision(path: str, trained: dict, encoder) -> None:
    """One stderr line when vectors here are computed otherwise than at training."""
    from bertfeat.extract import model as model_io

    device = model_io.resolve_device(encoder.device)
    precision, runtime = encoder.resolve_precision(device)
    if (precision, runtime) == (trained["precision"], trained["runtime"]):
        return
    agreement = ", ".join(f"{p} matches fp32 at cosine {AGREEMENT[p]}"
                          for p in sorted({trained["precision"], precision} - {"fp32"}) if p in AGREEMENT)
    log.warning("note: %s was trained on %s vectors (%s on %s); here they are %s (%s on %s): %s (BENCHMARKS.md), "
                "so a borderline text may change label; --precision chooses another",
                os.path.basename(os.path.normpath(path)), trained["precision"], trained["runtime"], trained["device"],
                precision, runtime, device, agreement or "the numbers differ in the last bits")
