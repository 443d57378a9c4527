"""Text -> vectors: read data files, run a frozen BERT-family encoder, pool, with a cache in front."""
from bertfeat.extract.data import Table, check_labels, read_table, split_table
from bertfeat.extract.encoder import BertEncoder
from bertfeat.extract.model import DEFAULT_MODEL
from bertfeat.extract.pipeline import Embedded, embed
from bertfeat.extract.pooling import POOLINGS
from bertfeat.extract.views import feature_encoders

__all__ = ["BertEncoder", "DEFAULT_MODEL", "Embedded", "POOLINGS", "Table", "check_labels", "embed",
           "feature_encoders", "read_table", "split_table"]
