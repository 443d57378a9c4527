"""A fitted head as plain arrays and JSON, in one ``.npz`` file: loading it runs no code from the file.

Pickle (joblib) rebuilds whatever objects a file names, so unpickling a planted file runs the
planter's code. This format rebuilds only the classes in ``SAFE_CLASSES``, by name from that table,
and fills them with what the file holds: numbers, strings, lists and numpy arrays
(read with ``allow_pickle=False``). Layout of the ``.npz``::

    state.json   (stored as a uint8 array) the object tree: {"object": "LogisticRegression",
                 "state": {"coef_": {"array": "a0"}, "C": 10.0, ...}}
    a0, a1, ...  the numpy arrays the tree points to (numeric or fixed-width unicode dtypes)

An object or array that the head holds in several places (a fitted member is both a parameter and a
fitted attribute of its wrapper, ``estimator`` and ``estimator_``) is stored once: an object node
carries an ``id``, and its later places hold ``{"ref": id}``; an array's later places name the same key.

A head holding anything else (LightGBM's booster, say) raises ``Unsupported`` and is pickled instead,
behind ``trust_pickle``. Attributes in ``TRAINING_ONLY`` are dropped: they serve further training,
never ``predict``/``predict_proba``.
"""
from __future__ import annotations

import io
import json

import numpy as np
from sklearn.ensemble import VotingClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelBinarizer, LabelEncoder, StandardScaler
from sklearn.utils import Bunch

from bertfeat.classify.calibration import Calibrated
from bertfeat.classify.ensemble import Columns, SoftVote
from bertfeat.classify.heads import FewRowsKNN, FewRowsMLP, Oversampled, ShrunkLDA, SoftmaxSVC, TopComponents
from bertfeat.classify.torch_head import TorchSoftmaxClassifier

# Rebuilt by name from this table only; a name the file gives that is not here is refused.
SAFE_CLASSES = {cls.__name__: cls for cls in (
    Calibrated, Columns, FewRowsKNN, FewRowsMLP, KNeighborsClassifier, LabelBinarizer, LabelEncoder,
    LogisticRegression, MLPClassifier, Oversampled, Pipeline, SGDClassifier, ShrunkLDA, SoftmaxSVC, SoftVote,
    StandardScaler, TopComponents, TorchSoftmaxClassifier, VotingClassifier)}
# Optimizer, loss object and random generator of a finished fit: used by partial_fit / warm starts only.
TRAINING_ONLY = frozenset({"_optimizer", "_loss_function_", "_random_state"})
STATE = "state.json"


class Unsupported(TypeError):
    """The head holds an object this format does not store (it must be pickled)."""


def dumps(head) -> bytes:
    """The fitted ``head`` as ``.npz`` bytes; raises ``Unsupported`` for state it cannot hold."""
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(head, arrays, "head", {})
    buf = io.BytesIO()
    np.savez(buf, **{STATE: np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8)}, **arrays)
    return buf.getvalue()


def loads(data: bytes):
    """Rebuild a head from ``dumps`` bytes. Raises ``ValueError`` on anything malformed or not allowed."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:  # zipfile, numpy format and pickle-refusal errors alike: not our file
        raise ValueError(f"not a head file ({type(exc).__name__})") from None
    if STATE not in arrays:
        raise ValueError(f"no {STATE} inside")
    tree = json.loads(arrays.pop(STATE).tobytes().decode())
    return _decode(tree, arrays, {})


def _encode(value, arrays: dict, where: str, seen: dict):
    """``seen``: id of an array or object already stored -> (its node, the value, kept alive so that its
    id is not reused by another)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and type(value) in (int, float):
        return value
    if id(value) in seen:
        return seen[id(value)][0]
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.kind not in "biufcU":  # object / bytes / structured arrays would need pickle
            raise Unsupported(f"{where}: array of dtype {array.dtype}")
        key = f"a{len(arrays)}"
        arrays[key] = array
        node = {"scalar" if isinstance(value, np.generic) else "array": key}
        seen[id(value)] = (node, value)
        return node
    if isinstance(value, (list, tuple)):
        items = [_encode(v, arrays, f"{where}[{i}]", seen) for i, v in enumerate(value)]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise Unsupported(f"{where}: dict with non-string keys")
        items = {k: _encode(v, arrays, f"{where}.{k}", seen) for k, v in value.items()}
        return {"bunch" if isinstance(value, Bunch) else "dict": items}
    name = type(value).__name__
    if SAFE_CLASSES.get(name) is not type(value):
        raise Unsupported(f"{where}: {type(value).__module__}.{name}")
    number = len(seen)  # unique: seen only grows
    seen[id(value)] = ({"ref": number}, value)
    state = {k: _encode(v, arrays, f"{where}.{k}", seen) for k, v in vars(value).items()
             if k not in TRAINING_ONLY}
    return {"object": name, "state": state, "id": number}


def _decode(node, arrays: dict, objects: dict):
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, arrays, objects) for v in node]
    if not isinstance(node, dict) or len(node) not in (1, 2, 3):
        raise ValueError("malformed state")
    if "object" in node:
        cls = SAFE_CLASSES.get(node["object"])
        if cls is None or not isinstance(node.get("state"), dict):
            raise ValueError(f"class {node['object']!r} is not one a head may hold")
        obj = cls.__new__(cls)  # no __init__: the state below is the whole object, as pickle restores it
        objects[node.get("id")] = obj
        obj.__dict__.update({k: _decode(v, arrays, objects) for k, v in node["state"].items()})
        return obj
    (kind, value), = node.items()
    if kind == "ref":
        if value not in objects:
            raise ValueError(f"reference to an object not stored before it ({value!r})")
        return objects[value]
    if kind in ("array", "scalar"):
        if value not in arrays:
            raise ValueError(f"missing array {value!r}")
        return arrays[value] if kind == "array" else arrays[value][()]
    if kind == "tuple" and isinstance(value, list):
        return tuple(_decode(v, arrays, objects) for v in value)
    if kind in ("dict", "bunch") and isinstance(value, dict):
        out = {k: _decode(v, arrays, objects) for k, v in value.items()}
        return Bunch(**out) if kind == "bunch" else out
    raise ValueError(f"malformed state ({kind!r})")
