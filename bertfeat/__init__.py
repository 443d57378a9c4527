"""bertfeat: text classification on frozen BERT features.

The sub-packages ``extract`` (text -> vectors), ``cache`` (stored vectors) and ``classify`` (heads,
metrics, bench) import as ``bertfeat.extract`` and so on. An installed wheel holds them inside this
folder; a source checkout keeps them at the repository root (the layout the project chose), so there
this package also looks one folder up.
"""
import os as _os

__version__ = "0.2.0"

_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "extract")) and _os.path.isfile(_os.path.join(_root, "extract", "__init__.py")):
    __path__.append(_root)  # noqa: F821  (a package's __path__)

from bertfeat.errors import BertfeatError  # noqa: E402


def __getattr__(name):
    # ``bertfeat.load`` / ``TextClassifier`` on first use: a plain ``import bertfeat`` (every CLI start,
    # a one-line error included) does not pay for scikit-learn and pandas.
    if name in ("TextClassifier", "load"):
        from bertfeat import api

        return getattr(api, name)
    raise AttributeError(f"module 'bertfeat' has no attribute '{name}'")


__all__ = ["BertfeatError", "TextClassifier", "__version__", "load"]
