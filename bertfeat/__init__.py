"""bertfeat: text classification on frozen BERT features.

The Python API is the product; the ``bertfeat`` command line is a thin adapter over it::

    import bertfeat
    clf = bertfeat.fit("train.csv", head="svm")          # or a DataFrame, or (texts, labels)
    clf.predict(["my card was declined"])
    res = bertfeat.bench("train.csv", "test.csv")       # res.table, res.best, res.save("runs/b")
    clf = bertfeat.load("runs/b/best-model")

Names import lazily: ``import bertfeat`` (every CLI start) pays for neither scikit-learn nor torch.
"""
from bertfeat.errors import BertfeatError, CacheError, ConfigError, DataError, ModelFolderError

__version__ = "0.3.0"

_LAZY = {"fit": "bertfeat.api", "bench": "bertfeat.api", "finetune": "bertfeat.api", "embed": "bertfeat.api",
         "find_label_issues": "bertfeat.api",
         "load": "bertfeat.model_folder", "TextClassifier": "bertfeat.classifier", "BenchResult": "bertfeat.benching",
         "BertEncoder": "bertfeat.extract"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bertfeat' has no attribute '{name}'")


def __dir__():
    return sorted(__all__)


__all__ = ["BenchResult", "BertEncoder", "BertfeatError", "CacheError", "ConfigError", "DataError",
           "ModelFolderError", "TextClassifier", "__version__", "bench", "embed", "find_label_issues", "finetune",
           "fit", "load"]
