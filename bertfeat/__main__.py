"""``python -m bertfeat``: the same command line as ``bertfeat`` and ``python cli.py``."""
import sys

from bertfeat.cli import main

sys.exit(main())
