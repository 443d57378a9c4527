"""The on-disk embedding store: finds vectors by (encoder fingerprint, text)."""
from bertfeat.cache import admin
from bertfeat.cache.store import (VectorStore, atomic_write, atomic_write_json, default_cache_dir, fingerprint_of,
                                  sha256_file, text_keys)

__all__ = ["VectorStore", "admin", "atomic_write", "atomic_write_json", "default_cache_dir", "fingerprint_of",
           "sha256_file", "text_keys"]
