"""``python cli.py ...`` from a checkout: the same command line as the installed ``bertfeat`` (bertfeat/cli.py)."""
import sys

from bertfeat.cli import main

if __name__ == "__main__":
    sys.exit(main())
