"""Heads on cached vectors: the registry, metrics, model folders. Sees arrays only, never torch models."""
from bertfeat.classify.heads import HEADS, make_head
from bertfeat.classify.metrics import evaluate, format_report
from bertfeat.classify.model_dir import load_head, load_model_dir, package_versions, read_manifest, save_model_dir

__all__ = ["HEADS", "evaluate", "format_report", "load_head", "load_model_dir", "make_head", "package_versions",
           "read_manifest", "save_model_dir"]
