"""Model folders from Python: ``bertfeat.load(dir)`` reads one into a ``TextClassifier``; ``save_classifier``
writes one.

A model folder's manifest keeps two things apart (see README, "Model folders"):

- what the head needs, checked on load: the encoder model and its identity (sha256 over weights,
  tokenizer and config files), pooling, layers, max length, long-text mode, normalization, pair column;
- how the training machine computed the vectors (``trained_with``: precision, runtime, device). Another
  machine computes them at the best precision it has; a difference is one notice, not a refusal.
"""
from __future__ import annotations

import logging
import os

from bertfeat.classify.model_dir import ENCODER_KEYS, MANIFEST
from bertfeat.errors import BertfeatError, ModelFolderError

log = logging.getLogger("bertfeat")

# Cosine against fp32 vectors, as measured (BENCHMARKS.md: bf16 >= 0.9999; int8 >= 0.95, mean ~0.99;
# fp16 is what `auto` accepts on a GPU, >= 0.999).
AGREEMENT = {"bf16": ">= 0.9999", "fp16": ">= 0.999", "int8": "~0.99 (>= 0.95 per text)"}


def model_manifest(encoders, head_name: str, features: str, labels, text_col: str = "text",
                   label_col: str = "label", pair_col: str | None = None, label_sep: str | None = None,
                   label_cols: str | None = None) -> dict:
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
    label_sep, label_cols : str or None
        How a multi-label file's labels were read (``predict --data`` reads them back the same way).
    """
    from bertfeat.extract import model as model_io

    first = encoders[0]
    device = model_io.resolve_device(first.device)
    precision, runtime = first.resolve_precision(device)
    return {
        "head": head_name, "features": features, "labels": [c.item() if hasattr(c, "item") else c for c in labels],
        "text_col": text_col, "label_col": label_col, "pair_col": pair_col,
        **{k: v for k, v in (("label_sep", label_sep), ("label_cols", label_cols)) if v is not None},
        "encoders": [{k: e.get_params()[k] for k in ENCODER_KEYS} for e in encoders],
        "model_id": model_io.model_id(model_io.resolve_model_dir(first.model)),
        "trained_with": {"precision": precision, "runtime": runtime, "device": device,
                         "precision_asked": first.precision},
    }


def save_classifier(clf, path: str) -> str:
    """Write fitted ``clf`` as a model folder at ``path`` (new or empty); returns its absolute path."""
    from bertfeat.classify.model_dir import OWN_KEYS, save_model_dir

    manifest = {k: v for k, v in clf.manifest_.items() if k not in OWN_KEYS}
    local = encoder_folder(clf.folder_, clf.manifest_)
    # a fine-tuned encoder travels with its head, staged with it: the folder appears whole or not at all
    folders = {clf.manifest_["encoder_folder"]: local} if local else {}
    return save_model_dir(path, clf.head_, manifest, clf.run_ or {}, folders)


def load(path: str, trust_pickle: bool = False, precision: str | None = None, device: str = "auto",
         batch_size: int = 128, cache_dir=False, progress: bool = False, cache_write: bool = False):
    """Load a model folder written by ``fit``, ``bench``, ``finetune`` or ``TextClassifier.save``.

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
    cache_dir : str, None or False, default=False
        Vector cache to read (None: the default one); False computes every vector (what a server wants).
    progress : bool, default=False
        A progress bar on stderr while embedding.
    cache_write : bool, default=False
        Store the vectors computed at prediction in the cache.

    Returns
    -------
    TextClassifier
        Fitted: ``predict``, ``predict_proba``, ``classes_``, ``save``; it pickles and deep-copies.

    Raises
    ------
    ModelFolderError
        A damaged folder, another format, a pickled head without ``trust_pickle``, or an encoder model
        whose weights, tokenizer or config differ from the ones the head was trained on.
    """
    import numpy as np

    from bertfeat.classifier import TextClassifier
    from bertfeat.classify.model_dir import load_model_dir
    from bertfeat.extract import BertEncoder, model as model_io

    manifest, head, run = load_model_dir(path, trust_pickle=trust_pickle)
    name = encoder_folder(path, manifest) or manifest["encoders"][0]["model"]
    if model_io.model_id(model_io.resolve_model_dir(name)) != manifest["model_id"]:
        raise ModelFolderError(f"model folder {path}: the encoder '{name}' found here is not the one this head "
                               "was trained on (its weights, tokenizer or config changed); fit the head again")
    first = {**manifest["encoders"][0], **({"model": name} if name != manifest["encoders"][0]["model"] else {})}
    precision = precision or _default_precision(manifest["trained_with"], device)
    encoder = BertEncoder(**first, precision=precision, device=device, batch_size=batch_size)
    encoder.validate()  # a bad precision or batch size fails here, not on the first request
    clf = TextClassifier(head=manifest["head"], features=manifest["features"], encoder=encoder,
                         cache_dir=cache_dir, cache_write=cache_write, progress=progress)
    clf.head_, clf.manifest_, clf.run_ = head, manifest, run
    clf.folder_ = os.path.abspath(path)
    clf.classes_ = np.asarray(head.classes_)
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
