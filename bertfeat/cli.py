"""bertfeat command line: parse arguments and hand them to `commands`; user errors become one line.

Results go to stdout (a table, or one JSON object with --json); logs and progress bars go to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys

from bertfeat.errors import BertfeatError

log = logging.getLogger("bertfeat")

EXAMPLES = {
    "embed": """example:
  python cli.py embed --data data/demo/train.csv --json
  {"n_texts": 320, "n_unique": 320, "n_cached": 0, "n_embedded": 320, ...}
  (a second identical run reports "n_embedded": 0: every vector comes from the cache)
  python cli.py embed --data 'corpus/*.parquet' --engine ray --address auto   # a Ray cluster""",
    "fit": """example:
  python cli.py fit --train data/demo/train.csv --test data/demo/test.csv --head logreg
  (embeds what the cache lacks, fits the head, prints the metrics, saves runs/<time>-logreg/)""",
    "cache": """examples:
  python cli.py cache info                      # entries per encoder: rows, size, last write
  python cli.py cache verify                    # checksums of every shard; exit 1 on damage
  python cli.py cache prune --older-than 30     # remove entries not written for 30 days
  python cli.py cache prune --model all-MiniLM-L6-v2 --dry-run   # list every path it would remove
  python cli.py cache prune --quarantine        # delete the damaged shards that runs moved aside""",
    "bench": """examples:
  python cli.py bench --train data/demo/train.csv --test data/demo/test.csv
  python cli.py bench --train train.csv --test test.csv --heads logreg,svm --features mean,mean+max
  python cli.py bench --train train.csv --test test.csv --select macro_f1 --class-weight balanced
  python cli.py bench --train train.csv --test test.csv --samples-per-label 8 --n-experiments 10   # MTEB
  (features: a pooling, `+` to concatenate, `@layers` to choose layers: mean, mean+max, cls@-2, mean@-4:)""",
    "finetune": """examples:
  python cli.py finetune --train data/demo/train.csv --test data/demo/test.csv            # full fine-tune
  python cli.py finetune --train train.csv --test test.csv --method setfit               # SetFit, few labels
  (prints the test metrics and saves runs/<time>-finetune-full/ with the tuned encoder; predict loads it.
  A killed run resumes from its last epoch when the same command is run again)""",
    "predict": """example:
  python cli.py predict --model-dir runs/demo-logreg --text "my parcel never arrived"
  delivery    0.912    my parcel never arrived
  python cli.py predict --model-dir runs/nli --text "a man sleeps" --pair "a person rests"   # a pair model
  python cli.py predict --model-dir runs/x-lgbm --data new.csv --trust-pickle   # a pickled head""",
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one `error:` line and exit code 2, like every other user error."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A word starting with -<digit> is a value, not a flag (none of ours starts with a digit), so
        # `--layers -4:` and `--layers -4,-1` parse as the README writes them. Python 3.14's argparse
        # matches the same way; older ones took only plain numbers (-2) and wanted `--layers=-4:`.
        self._negative_number_matcher = re.compile(r"-\.?\d")

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _encoder_flags() -> argparse.ArgumentParser:
    from bertfeat.extract import DEFAULT_MODEL, POOLINGS
    from bertfeat.extract.encoder import LONG_MODES, PRECISIONS

    p = Parser(add_help=False)
    g = p.add_argument_group("encoder and data")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help="Hugging Face model id or local folder (default: %(default)s, shipped offline)")
    g.add_argument("--pooling", default="mean", choices=POOLINGS, help="token pooling (default: %(default)s)")
    g.add_argument("--layers", default="-1",
                   help="hidden layers to pool: -1 last, -2 second to last, -4: last four concatenated "
                        "(default: %(default)s)")
    g.add_argument("--max-length", type=int, default=256, help="tokens per text; longer ones are truncated")
    g.add_argument("--no-normalize", dest="normalize", action="store_false", help="keep raw (unnormalized) vectors")
    g.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="forward pass: auto (bf16 where the CPU/GPU has it, else fp32; vectors match fp32 to "
                        "cosine >= 0.999), fp32, bf16, fp16, or int8 (CPU, fastest, cosine ~0.99)")
    g.add_argument("--long", default="truncate", choices=LONG_MODES,
                   help="texts over --max-length: truncate (counted), or chunk into overlapping windows and average")
    g.add_argument("--batch-size", type=int, default=128, help="most texts per forward batch")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    g.add_argument("--cache-dir", default=None, help="vector cache (default: $BERTFEAT_CACHE or ~/.cache/bertfeat)")
    g.add_argument("--text-col", default="text", help="column with the text (default: %(default)s)")
    g.add_argument("--pair-col", default=None, help="column with a second text, for sentence-pair tasks")
    g.add_argument("--encoding", default="utf-8", help="text encoding of CSV/TSV/JSONL files")
    g.add_argument("--drop-empty", action="store_true", help="skip rows with empty text instead of failing")
    g.add_argument("--shard-size", "--chunk-size", dest="shard_size", type=int, default=2048,
                   help="texts per committed cache shard: what a killed run can lose at most")
    g.add_argument("--window", type=int, default=None, help=argparse.SUPPRESS)  # texts tokenized together
    g.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    g.add_argument("--quiet", action="store_true", help="no progress bar or info logs")
    return p


def _selection_flags(p, fit: bool) -> None:
    what = "the head's grid setting" if fit else "the best view x head"
    from bertfeat.classify.selection import SCORES

    p.add_argument("--select", default="accuracy" if not fit else None, choices=SCORES,
                   help=f"pick {what} by this cross-validated score"
                        + (" (default: no search, the head's defaults)" if fit else " (default: %(default)s)"))
    p.add_argument("--class-weight", default=None, choices=["balanced"],
                   help="weigh every class equally: class weights where the head has them, else oversampling")
    p.add_argument("--tune-threshold", action="store_true",
                   help="binary tasks with --select macro_f1: the decision threshold that maximizes CV macro-F1, "
                        "kept when its nested CV score beats 0.5's")


def build_parser() -> argparse.ArgumentParser:
    from bertfeat.classify import HEADS
    from bertfeat.classify.heads import default_heads
    from bertfeat.classify.selection import DEFAULT_VIEWS
    from bertfeat.extract import DEFAULT_MODEL
    from bertfeat.extract.encoder import PRECISIONS
    from bertfeat.extract.finetune import METHODS as FINETUNE_METHODS

    enc = _encoder_flags()
    parser = Parser(prog="bertfeat", description="Text classification on frozen BERT features.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("embed", parents=[enc], help="embed texts into the cache", epilog=EXAMPLES["embed"],
                       formatter_class=fmt)
    p.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="CSV, TSV, JSONL or Parquet file, a folder of them, or a glob (repeatable)")
    g = p.add_argument_group("engine (see README: Running on a cluster)")
    g.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process; ray: a pool of encoder actors on a Ray cluster (default: %(default)s)")
    g.add_argument("--address", default=None,
                   help="Ray cluster to join: auto, or ray://HOST:10001 (default: start Ray on this machine)")
    g.add_argument("--num-workers", type=int, default=None,
                   help="Ray encoder actors (default: one per GPU, or one per CPU core without GPUs)")
    g.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per Ray actor (default: 1 if the cluster has GPUs, else 0)")
    g.add_argument("--block-size", type=int, default=None,
                   help="texts per Ray actor call (default: 1024 on CPU workers, 16384 on GPU workers)")

    labelled = Parser(add_help=False)
    g = labelled.add_argument_group("labelled data")
    g.add_argument("--train", required=True, metavar="FILE", help="labelled training file")
    split = g.add_mutually_exclusive_group()
    split.add_argument("--test", metavar="FILE", help="labelled test file")
    split.add_argument("--test-size", type=float, default=0.2, help="held-out share of --train when no --test")
    g.add_argument("--label-col", default="label", help="column with the label (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed for the split, the heads and the CV folds")
    g.add_argument("--out", default=None, help="output folder (default: runs/<time>-<head or bench>)")

    p = sub.add_parser("fit", parents=[enc, labelled], help="fit a head on cached vectors and evaluate it",
                       epilog=EXAMPLES["fit"], formatter_class=fmt)
    p.add_argument("--head", default="logreg", choices=sorted(HEADS), help="classifier head (default: %(default)s)")
    p.add_argument("--features", default=None,
                   help="feature view, overriding --pooling/--layers: e.g. mean+max (concatenated), cls@-2")
    _selection_flags(p, fit=True)
    p.add_argument("--cv", type=int, default=3, help="with --select: cross-validation folds (default: 3)")

    p = sub.add_parser("bench", parents=[enc, labelled], help="compare heads and feature views in one table",
                       epilog=EXAMPLES["bench"], formatter_class=fmt)
    p.add_argument("--heads", default=None,
                   help=f"comma-separated, every one on every view (default: {','.join(default_heads())} chosen "
                        f"by successive halving, and a soft vote; registered: {','.join(sorted(HEADS))})")
    p.add_argument("--features", "--poolings", dest="features", default=None,
                   help="comma-separated feature views (default: " + ",".join(DEFAULT_VIEWS) + ", or the view "
                        "--pooling/--layers name if changed); --poolings is the former name")
    p.add_argument("--cv", type=int, default=3, help="cross-validation folds on the training set (default: 3)")
    p.add_argument("--no-tune", action="store_true", help="each head's default setting only, no grid")
    p.add_argument("--budget", type=float, default=None, metavar="UNITS",
                   help="default bench: cost units for the dearer heads (one unit ~ a logistic-regression fit "
                        "on 10,000 x 384; default: 60 x sqrt(rows / 10,000)); what it skips is reported")
    p.add_argument("--no-vote", dest="vote", action="store_false",
                   help="default bench: no soft vote of the candidates, single heads only (with --heads or "
                        "--features there is none: every listed head on every listed view)")
    _selection_flags(p, fit=False)
    p.add_argument("--jobs", type=int, default=None, help="parallel worker processes (default: one per core)")
    p.add_argument("--samples-per-label", type=int, default=0,
                   help="MTEB protocol: logistic regression on this many random samples per label")
    p.add_argument("--n-experiments", type=int, default=10, help="MTEB protocol: repetitions (default: 10)")
    p.add_argument("--finetune", default=None, metavar="METHODS",
                   help="also fine-tune the encoder (full, setfit, or full,setfit) and add those rows, marked "
                        "fine-tuned; with --samples-per-label, setfit on the same samples")
    p.add_argument("--finetune-epochs", dest="epochs", type=int, default=None,
                   help="most epochs of each fine-tune (default: the method's, as in finetune --epochs)")

    p = sub.add_parser("finetune", parents=[labelled], help="fine-tune the encoder itself (full or SetFit)",
                       epilog=EXAMPLES["finetune"], formatter_class=fmt)
    g = p.add_argument_group("fine-tuning (defaults per method: see README, finetune)")
    g.add_argument("--method", default="full", choices=FINETUNE_METHODS,
                   help="full: encoder + mean pooling + linear layer, cross-entropy; setfit: contrastive pairs, "
                        "then logistic regression (default: %(default)s)")
    g.add_argument("--model", default=DEFAULT_MODEL, help="base model: Hugging Face id or local folder")
    g.add_argument("--epochs", type=int, default=None, help="most epochs (full: 5, early stopping; setfit: 1)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate of the body (full: 1e-4; setfit: 2e-5)")
    g.add_argument("--batch-size", dest="ft_batch_size", type=int, default=None,
                   help="texts (full: 32) or pairs (setfit: 16) per optimizer step; micro-batched to fit memory")
    g.add_argument("--max-length", type=int, default=128, help="tokens per text (default: %(default)s)")
    g.add_argument("--val-size", type=float, default=None,
                   help="share of --train held out for validation and early stopping (full: 0.1; setfit: 0)")
    g.add_argument("--max-pairs", type=int, default=None, help="setfit: most sentence pairs per epoch (25000)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    g.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="forward pass of the tuned encoder's test vectors, as in fit (default: %(default)s)")
    g.add_argument("--text-col", default="text", help="column with the text (default: %(default)s)")
    g.add_argument("--encoding", default="utf-8", help="text encoding of CSV/TSV/JSONL files")
    g.add_argument("--drop-empty", action="store_true", help="skip rows with empty text instead of failing")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    g.add_argument("--quiet", action="store_true", help="no progress bar or info logs")
    p.set_defaults(pair_col=None)

    p = sub.add_parser("cache", help="inspect, verify or prune the vector cache", epilog=EXAMPLES["cache"],
                       formatter_class=fmt)
    p.add_argument("action", choices=["info", "verify", "prune"])
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--model", default=None, help="prune: entries of this encoder model")
    p.add_argument("--fingerprint", default=None, help="prune: the entry with this fingerprint (or prefix)")
    p.add_argument("--older-than", type=float, default=None, metavar="DAYS", help="prune: entries idle this long")
    p.add_argument("--all", action="store_true", help="prune: every entry, model export and quarantined shard")
    p.add_argument("--quarantine", action="store_true", help="prune: the damaged shards moved to quarantine/")
    p.add_argument("--leftovers", action="store_true", help="prune: also files left by killed runs (>1 h old)")
    p.add_argument("--dry-run", action="store_true", help="prune: list, remove nothing")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("predict", help="label new texts with a saved model folder", epilog=EXAMPLES["predict"],
                       formatter_class=fmt)
    p.add_argument("--model-dir", required=True, help="folder written by fit or bench")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to label (repeatable)")
    src.add_argument("--data", metavar="FILE",
                     help="file of texts (and the pair column, for a pair model); with a label column, accuracy "
                          "is reported")
    p.add_argument("--pair", action="append", help="the second text of each --text, for a model fit with --pair-col")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="forward pass (default: as trained where this machine has it, else the best it has)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a pickled head (lgbm): unpickling runs code from the folder; only for folders you trust")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--drop-empty", action="store_true",
                   help="skip empty texts (of --text or --data) instead of failing; empty: only spaces or "
                        "invisible characters")
    p.add_argument("--json", action="store_true", help="print a JSON list of {text, label, proba}")
    p.add_argument("--quiet", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s: %(message)s" if args.quiet else "%(message)s")
    try:
        from bertfeat.commands import COMMANDS

        result = COMMANDS[args.command](args)
    except BertfeatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished cache shards are kept and a re-run resumes", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, default=str))
    return getattr(args, "exit_code", 0)


if __name__ == "__main__":
    sys.exit(main())
