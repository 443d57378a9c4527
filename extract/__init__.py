"""Text -> vectors: read data files, run a frozen BERT-family encoder, pool, with a cache in front."""
from extract.data import Table, check_labels, read_table, split_table
from extract.encoder import BertEncoder, feature_encoders
from extract.model import DEFAULT_MODEL
from extract.pipeline import Embedded, embed
from extract.pooling import POOLINGS

__all__ = ["BertEncoder", "DEFAULT_MODEL", "Embedded", "POOLINGS", "Table", "check_labels", "embed",
           "feature_encoders", "read_table", "split_table"]
