"""A fitted head as plain arrays and JSON, in one ``.npz`` file: loading it runs no code from the file.

Pickle (joblib) rebuilds whatever objects a file names, so unpickling a planted file runs the
planter's code. This format rebuilds only the classes in ``SAFE_CLASSES``, by name from that table,
and fills them with what the file holds: numbers, strings, lists and numpy arrays (never pickled).
The file is still untrusted input, so only the attributes each class declares are restored, and the
head is checked before anyone predicts with it (``head_check.py``). Layout of the ``.npz``::

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
import math
import zipfile

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
from bertfeat.classify.head_check import MAX_DEPTH, attributes, check, probe
from bertfeat.classify import head_check_multi  # noqa: F401  (importing it adds the multi-label heads to the checks)
from bertfeat.classify.heads import FewRowsKNN, FewRowsMLP, Oversampled, ShrunkLDA, SoftmaxSVC, TopComponents
from bertfeat.classify.multilabel import LabelVote, MultiLabel, NeighbourLabels, OneVsRest, SigmoidNet
from bertfeat.classify.torch_head import TorchSoftmaxClassifier

# Rebuilt by name from this table only; a name the file gives that is not here is refused.
SAFE_CLASSES = {cls.__name__: cls for cls in (
    Calibrated, Columns, FewRowsKNN, FewRowsMLP, KNeighborsClassifier, LabelBinarizer, LabelEncoder,
    LabelVote, LogisticRegression, MLPClassifier, MultiLabel, NeighbourLabels, OneVsRest, Oversampled, Pipeline,
    SGDClassifier, ShrunkLDA, SigmoidNet, SoftmaxSVC, SoftVote, StandardScaler, TopComponents,
    TorchSoftmaxClassifier, VotingClassifier)}
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
    """Rebuild a head from ``dumps`` bytes. Raises ``ValueError`` on anything malformed or not allowed.

    Nothing reaches ``predict`` unchecked: only the arrays the tree names are read, each within a size
    budget taken from the zip and ``.npy`` headers before anything is decompressed; an object gets only
    the attributes its class declares, of the declared kinds, with shapes that agree the way
    scikit-learn's C code assumes; and the head must turn a few random vectors into probabilities
    (``head_check.py``).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = {info.filename: info for info in archive.infolist()}
    except Exception as exc:  # not a zip at all
        raise ValueError(f"not a head file ({type(exc).__name__})") from None
    # A real head file is stored uncompressed (np.savez): 16 times its size is far beyond what an honest
    # one expands to, and a zip bomb (3 MB declaring 3 GB) is refused before anything is inflated.
    read = _Reader(archive, members, budget=16 * len(data) + (16 << 20))
    try:
        tree = json.loads(read(STATE).tobytes().decode())
        head = _decode(tree, read, {}, 0)
        probe(head, check(head))
    except RecursionError:
        raise ValueError(f"state nested deeper than {MAX_DEPTH} levels") from None
    except (TypeError, KeyError, IndexError, AttributeError, UnicodeError, ArithmeticError) as exc:
        # a shape the checks above let through but the head's own code trips on: still malformed
        raise ValueError(f"malformed state ({type(exc).__name__}: {exc})") from None
    return head


class _Reader:
    """``read(key)``: the ``.npy`` member ``key`` of the archive, read once, checked against its headers."""

    def __init__(self, archive, members: dict, budget: int):
        self.archive, self.members, self.budget, self.cache = archive, members, budget, {}

    def __call__(self, key: str) -> np.ndarray:
        if key not in self.cache:
            self.cache[key] = self._read(key)
        return self.cache[key]

    def _read(self, key: str) -> np.ndarray:
        info = self.members.get(f"{key}.npy") if isinstance(key, str) else None
        if info is None:
            raise ValueError(f"missing array {key!r}")
        if info.file_size > self.budget:
            raise ValueError(f"array {key!r} declares {info.file_size} bytes uncompressed, more than a head "
                             f"file of this size holds")
        self.budget -= info.file_size
        fmt = np.lib.format
        try:
            with self.archive.open(info) as fh:
                version = fmt.read_magic(fh)
                header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}[version]
                shape, fortran, dtype = header(fh)
                nbytes = math.prod(shape) * dtype.itemsize
                if dtype.kind not in "biufU" or nbytes != info.file_size - fh.tell():
                    raise ValueError(f"array {key!r}: header ({dtype}, {shape}) does not match its size")
                buf = bytearray(nbytes)
                if fh.readinto(buf) != nbytes:
                    raise ValueError(f"array {key!r} is truncated")
        except ValueError:
            raise
        except Exception as exc:  # zipfile / zlib / numpy header errors alike: not our file
            raise ValueError(f"array {key!r} unreadable ({type(exc).__name__})") from None
        # in the order it was saved: a head predicts bit for bit as before (float32 sums depend on it)
        return np.frombuffer(buf, dtype).reshape(shape, order="F" if fortran else "C")


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


_BUSY = object()  # an object being decoded: a reference to it is a cycle


def _decode(node, read, objects: dict, depth: int):
    if depth > MAX_DEPTH:
        raise ValueError(f"state nested deeper than {MAX_DEPTH} levels")
    if node is None or isinstance(node, (bool, int, str)):
        return node
    if isinstance(node, float):
        return _finite(node, "a number")
    if isinstance(node, list):
        return [_decode(v, read, objects, depth + 1) for v in node]
    if not isinstance(node, dict) or len(node) not in (1, 2, 3):
        raise ValueError("malformed state")
    if "object" in node:
        return _decode_object(node, read, objects, depth)
    (kind, value), = node.items()
    if kind == "ref":
        obj = objects.get(value) if isinstance(value, int) and not isinstance(value, bool) else None
        if obj is None:
            raise ValueError(f"reference to an object not stored before it ({value!r})")
        if obj is _BUSY:
            raise ValueError(f"reference cycle (object {value} holds itself)")
        return obj
    if kind in ("array", "scalar"):
        array = _finite(read(value), f"array {value!r}")
        if kind == "array":
            return array
        if array.ndim:
            raise ValueError(f"scalar {value!r} is an array of shape {array.shape}")
        return array[()]
    if kind == "tuple" and isinstance(value, list):
        return tuple(_decode(v, read, objects, depth + 1) for v in value)
    if kind in ("dict", "bunch") and isinstance(value, dict):
        out = {k: _decode(v, read, objects, depth + 1) for k, v in value.items()}
        return Bunch(**out) if kind == "bunch" else out
    raise ValueError(f"malformed state ({kind!r})")


def _decode_object(node, read, objects: dict, depth: int):
    name, state, number = node.get("object"), node.get("state"), node.get("id")
    cls = SAFE_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None or not isinstance(state, dict) or set(node) - {"object", "state", "id"}:
        raise ValueError(f"class {name!r} is not one a head may hold")
    if number is not None and (not isinstance(number, int) or number in objects):
        raise ValueError(f"{name}: bad or repeated object id {number!r}")
    allowed = attributes(cls)
    unknown = sorted(set(state) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has attributes it never holds ({', '.join(unknown[:5])})")
    objects[number] = _BUSY
    values = {k: _decode(v, read, objects, depth + 1) for k, v in state.items()}
    obj = cls.__new__(cls)  # no __init__: the state below is the whole object, as pickle restores it
    obj.__dict__.update(values)
    objects[number] = obj
    return obj


def _finite(value, what: str):
    """``value`` unless it holds a NaN or infinity, which no fitted head does and which predict would spread."""
    if np.asarray(value).dtype.kind in "fc" and not np.isfinite(value).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return value
