"""bertfeat command line: argv -> the command's options dataclass -> the Python API -> printed results.

Results go to stdout (a table, or one JSON object with --json); logs and progress bars go to stderr.
Library errors name parameters (``cv=1``); here they become one ``error:`` line naming the flag, exit 2.
``--help`` imports nothing heavy: choices come from ``bertfeat.options``' name lists.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys

from bertfeat import options as o
from bertfeat.errors import BertfeatError
from bertfeat.messages import in_flags, log_to_stderr, option_strings

log = logging.getLogger("bertfeat")

EXAMPLES = {
    "embed": """example:
  bertfeat embed --data data/demo/train.csv --json
  {"n_texts": 320, "n_unique": 320, "n_cached": 0, "n_embedded": 320, ...}
  (a second identical run reports "n_embedded": 0: every vector comes from the cache)
  bertfeat embed --data 'corpus/*.parquet' --engine ray --address auto   # a Ray cluster""",
    "fit": """example:
  bertfeat fit --train data/demo/train.csv --test data/demo/test.csv --head logreg
  (embeds what the cache lacks, fits the head, prints the metrics, saves runs/<time>-logreg/)""",
    "cache": """examples:
  bertfeat cache info                      # entries per encoder: rows, size, last write
  bertfeat cache verify                    # checksums of every shard; exit 1 on damage
  bertfeat cache prune --older-than 30     # remove entries not written for 30 days
  bertfeat cache prune --model all-MiniLM-L6-v2 --dry-run   # list every path it would remove
  bertfeat cache prune --quarantine        # delete the damaged shards that runs moved aside""",
    "bench": """examples:
  bertfeat bench --train data/demo/train.csv --test data/demo/test.csv
  bertfeat bench --train train.csv --test test.csv --heads logreg,svm --features mean,mean+max
  bertfeat bench --train train.csv --test test.csv --select macro_f1 --class-weight balanced
  bertfeat bench --train train.csv --test test.csv --samples-per-label 8 --n-experiments 10   # MTEB
  bertfeat bench --train train.csv --test test.csv --track   # MLflow: runs/mlflow.db (pip install 'bertfeat[track]')
  (features: a pooling, `+` to concatenate, `@layers` to choose layers: mean, mean+max, cls@-2, mean@-4:)""",
    "finetune": """examples:
  bertfeat finetune --train data/demo/train.csv --test data/demo/test.csv            # full fine-tune
  bertfeat finetune --train train.csv --test test.csv --method setfit               # SetFit, few labels
  (prints the test metrics and saves runs/<time>-finetune-full/ with the tuned encoder; predict loads it.
  A killed run resumes from its last epoch when the same command is run again)""",
    "predict": """example:
  bertfeat predict --model-dir runs/demo-logreg --text "my parcel never arrived"
  delivery    0.912    my parcel never arrived
  bertfeat predict --model-dir runs/nli --text "a man sleeps" --pair "a person rests"   # a pair model
  bertfeat predict --model-dir runs/x-lgbm --data new.csv --trust-pickle   # a pickled head""",
    "labels": """examples:
  bertfeat labels --train data/demo/train.csv
     row  given      suggested  score  text
     316  returns    billing    0.998  Returning the tablet: do I include the invoice in the box?
     118  returns    delivery   0.980  I sent the laptop back 2 weeks ago, has it arrived at your warehouse yet?
  (rows whose given label looks wrong, most likely first; all of them in runs/<time>-labels/label_issues.csv.
  row: the 0-based data row of the file, header not counted)
  bertfeat labels --train train.csv --cv 10 --features mean+max --out runs/label-check""",
    "serve": """examples:
  bertfeat serve --model-dir runs/demo-logreg --port 8000
  curl -s localhost:8000/predict -d '{"texts": ["my parcel never arrived"]}'
  {"model": "demo-logreg", "classes": [...], "labels": ["delivery"], "probabilities": [[...]]}
  bertfeat serve --model-dir intent=runs/a --model-dir nli=runs/b   # POST /models/intent/predict
  (GET /health, /info, /metrics (Prometheus), /docs; SIGTERM answers the requests in flight, then exits 0)""",
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


def _score(value: str) -> str:
    """--select: our names, or scikit-learn's scorer names for the same scores (f1_macro)."""
    name = o.SCORE_ALIASES.get(value, value)
    if name not in o.SCORES:
        raise argparse.ArgumentTypeError(f"unknown score '{value}'; expected one of: "
                                         f"{', '.join(o.SCORES + tuple(o.SCORE_ALIASES))}")
    return name


def _parent(title: str, add) -> argparse.ArgumentParser:
    p = Parser(add_help=False)
    add(p.add_argument_group(title))
    return p


def _output_flags(g) -> None:
    g.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    g.add_argument("--quiet", action="store_true", help="no progress bar or info logs")


def _runtime_flags(g) -> None:
    """Where and how the forward pass runs: flags of every command that computes vectors."""
    g.add_argument("--precision", default=None, choices=o.PRECISIONS,
                   help="forward pass: auto (bf16 where the CPU/GPU has it, else fp32; vectors match fp32 to "
                        "cosine >= 0.999), fp32, bf16, fp16, or int8 (CPU, fastest, cosine ~0.99) (default: auto; "
                        "predict: as trained where this machine has it)")
    g.add_argument("--batch-size", type=int, default=o.EncoderOptions.batch_size,
                   help="most texts per forward batch of the encoder (default: %(default)s)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    g.add_argument("--cache-dir", default=None, help="vector cache (default: $BERTFEAT_CACHE or ~/.cache/bertfeat)")
    g.add_argument("--encoding", default="utf-8", help="text encoding of CSV/TSV/JSONL files (default: %(default)s)")
    g.add_argument("--drop-empty", action="store_true",
                   help="skip empty texts instead of failing; empty: only spaces or invisible characters")


def _encoder_flags(g) -> None:
    d = o.EncoderOptions
    g.add_argument("--model", default=d.model,
                   help="Hugging Face model id or local folder (default: %(default)s, shipped offline)")
    g.add_argument("--pooling", default=d.pooling, choices=o.POOLINGS, help="token pooling (default: %(default)s)")
    g.add_argument("--layers", default=d.layers,
                   help="hidden layers to pool: -1 last, -2 second to last, -4: last four concatenated "
                        "(default: %(default)s)")
    g.add_argument("--max-length", type=int, default=d.max_length,
                   help="tokens per text; longer ones are truncated (default: %(default)s)")
    g.add_argument("--no-normalize", dest="normalize", action="store_false", help="keep raw (unnormalized) vectors")
    g.add_argument("--long", default=d.long, choices=o.LONG_MODES,
                   help="texts over --max-length: truncate (counted), or chunk into overlapping windows and average")
    _runtime_flags(g)
    g.add_argument("--text-col", default="text", help="column with the text (default: %(default)s)")
    g.add_argument("--pair-col", default=None, help="column with a second text, for sentence-pair tasks")
    g.add_argument("--shard-size", "--chunk-size", dest="shard_size", type=int, default=d.shard_size,
                   help="texts per committed cache shard: what a killed run can lose at most (default: %(default)s)")
    g.add_argument("--window", type=int, default=None, help=argparse.SUPPRESS)  # texts tokenized together
    _output_flags(g)


def _labelled_flags(g) -> None:
    g.add_argument("--train", required=True, metavar="FILE", help="labelled training file (or folder, or glob)")
    split = g.add_mutually_exclusive_group()
    split.add_argument("--test", metavar="FILE", help="labelled test file")
    split.add_argument("--test-size", type=float, default=o.DataOptions.test_size,
                       help="held-out share of --train when no --test (default: %(default)s)")
    _label_flags(g)
    g.add_argument("--seed", type=int, default=0, help="seed for the split, the heads and the CV folds (default: 0)")
    g.add_argument("--out", default=None, help="output folder, new or empty (default: runs/<time>-<head or bench>)")


def _label_flags(g) -> None:
    """Where the labels are and how many a row has: flags of every command that reads labelled data."""
    g.add_argument("--label-col", default=None,
                   help="column with the label (default: label, or labels when the file has no label column)")
    g.add_argument("--label-sep", default=None, metavar="SEP",
                   help="multi-label CSV/TSV: labels in one cell separated by SEP, e.g. ';' for anger;joy (an empty "
                        "cell: no label); JSON Lines and Parquet lists need no flag")
    g.add_argument("--label-cols", default=None, metavar="COLS",
                   help="multi-label from one-hot columns (1/0 or true/false): a,b,c or a glob such as 'emo_*'; "
                        "the labels are the column names")
    g.add_argument("--task", default="auto", choices=o.TASKS,
                   help="single or multi-label; auto: multi when label cells are lists or --label-sep / "
                        "--label-cols is given, and it says so (default: %(default)s)")


def _selection_flags(g, fit: bool) -> None:
    what = "the head's grid setting" if fit else "the best view x head"
    g.add_argument("--select", default=None, type=_score, metavar="SCORE",
                   help=f"pick {what} by this cross-validated score: {', '.join(o.SINGLE_SCORES)}; multi-label "
                        f"data also {', '.join(s for s in o.SCORES if s not in o.SINGLE_SCORES)} (default there: "
                        "macro_f1) (or scikit-learn's names: " + ", ".join(o.SCORE_ALIASES) + ")"
                        + (" (default: no search, the head's defaults)" if fit else
                           " (default: accuracy; macro_f1 for multi-label data)"))
    g.add_argument("--cv", type=int, default=3, help="cross-validation folds on the training set (default: 3)")
    g.add_argument("--class-weight", default=None, choices=["balanced"],
                   help="weigh every class equally: class weights where the head has them, else oversampling")
    g.add_argument("--tune-threshold", action="store_true",
                   help="binary tasks with --select macro_f1: the decision threshold that maximizes CV macro-F1, "
                        "kept when its nested CV score beats 0.5's")


def build_parser() -> argparse.ArgumentParser:
    enc = _parent("encoder and data", _encoder_flags)
    labelled = _parent("labelled data", _labelled_flags)
    parser = Parser(prog="bertfeat", description="Text classification on frozen BERT features.")
    parser.add_argument("--version", action="version", version=f"bertfeat {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    fmt = argparse.RawDescriptionHelpFormatter

    def command(name, parents, help_text):
        return sub.add_parser(name, parents=parents, help=help_text, description=help_text,
                              epilog=EXAMPLES[name], formatter_class=fmt)

    p = command("embed", [enc], "embed texts into the cache")
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

    p = command("fit", [enc, labelled], "fit a head on cached vectors and evaluate it")
    g = p.add_argument_group("head")
    g.add_argument("--head", default="logreg", choices=o.HEAD_NAMES, help="classifier head (default: %(default)s)")
    g.add_argument("--features", default=None,
                   help="feature view, overriding --pooling/--layers: e.g. mean+max (concatenated), cls@-2")
    _selection_flags(g, fit=True)
    _track_flag(p.add_argument_group("tracking"))

    p = command("bench", [enc, labelled], "compare heads and feature views in one table")
    g = p.add_argument_group("candidates and selection")
    g.add_argument("--heads", default=None,
                   help=f"comma-separated, every one on every view (default: {','.join(o.DEFAULT_HEADS)} chosen "
                        f"by successive halving, and a soft vote; registered: {','.join(o.HEAD_NAMES)})")
    g.add_argument("--features", "--poolings", dest="features", default=None,
                   help="comma-separated feature views (default: " + ",".join(o.DEFAULT_VIEWS) + ", or the view "
                        "--pooling/--layers name if changed); --poolings is the former name")
    _selection_flags(g, fit=False)
    g.add_argument("--no-tune", dest="tune", action="store_false", help="each head's default setting only, no grid")
    g.add_argument("--budget", type=float, default=None, metavar="UNITS",
                   help="default bench: cost units for the dearer heads (one unit ~ a logistic-regression fit "
                        "on 10,000 x 384; default: 60 x sqrt(rows / 10,000)); what it skips is reported")
    g.add_argument("--no-vote", dest="vote", action="store_false",
                   help="default bench: no soft vote of the candidates, single heads only (with --heads or "
                        "--features there is none: every listed head on every listed view)")
    g.add_argument("--jobs", type=int, default=None, help="parallel worker processes (default: one per core)")
    g = p.add_argument_group("MTEB protocol and fine-tuned reference rows")
    g.add_argument("--samples-per-label", type=int, default=0,
                   help="MTEB protocol: logistic regression on this many random samples per label")
    g.add_argument("--n-experiments", type=int, default=10, help="MTEB protocol: repetitions (default: 10)")
    g.add_argument("--finetune", default=None, metavar="METHODS",
                   help="also fine-tune the encoder (full, setfit, or full,setfit) and add those rows, marked "
                        "fine-tuned; with --samples-per-label, setfit on the same samples; auto: a full "
                        "fine-tune only when the fine-tune probe recommends one and it fits --time-budget "
                        "(on a GPU the probe alone acts as auto)")
    g.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="--finetune auto: most minutes the full fine-tune may take here, as the probe estimates "
                        "them (fewer epochs when the default 5 would not fit; default: no limit)")
    g.add_argument("--finetune-probe", action=argparse.BooleanOptionalAction, default=None,
                   help="the fine-tune probe: two short fine-tunes on training subsamples that estimate whether "
                        "fine-tuning the encoder would gain over the frozen best, and how long it would take "
                        "(default: on for one label per text, within a fifth of the frozen bench's time, 30 s at "
                        "most; --no-finetune-probe skips it; --finetune auto runs it anyway)")
    g.add_argument("--probe-seconds", type=float, default=None, metavar="S",
                   help="the fine-tune probe's time budget; it is skipped, with the reason, when it would take "
                        "longer (default: a fifth of the frozen bench's wall time, 30 at most)")
    g.add_argument("--finetune-epochs", dest="epochs", type=int, default=None,
                   help="most epochs of each fine-tune (default: the method's, as in finetune --epochs)")
    _track_flag(p.add_argument_group("tracking"))

    d = o.FinetuneConfig
    p = command("finetune", [labelled], "fine-tune the encoder itself (full or SetFit)")
    g = p.add_argument_group("fine-tuning (defaults per method: see README, finetune)")
    g.add_argument("--method", default=d.method, choices=o.FINETUNE_METHODS,
                   help="full: encoder + mean pooling + linear layer, cross-entropy; setfit: contrastive pairs, "
                        "then logistic regression (default: %(default)s)")
    g.add_argument("--model", default=d.model, help="base model: Hugging Face id or local folder")
    g.add_argument("--epochs", type=int, default=None, help="most epochs (full: 5, early stopping; setfit: 1)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate of the body (full: 1e-4; setfit: 2e-5)")
    g.add_argument("--train-batch-size", type=int, default=None,
                   help="texts (full: 32) or pairs (setfit: 16) per optimizer step; micro-batched to fit memory")
    g.add_argument("--max-length", type=int, default=d.max_length, help="tokens per text (default: %(default)s)")
    g.add_argument("--val-size", type=float, default=None,
                   help="share of --train held out for validation and early stopping (full: 0.1; setfit: 0)")
    g.add_argument("--max-pairs", type=int, default=None, help="setfit: most sentence pairs per epoch (25000)")
    g.add_argument("--text-col", default="text", help="column with the text (default: %(default)s)")
    _runtime_flags(g)
    _output_flags(g)

    p = command("cache", [], "inspect, verify or prune the vector cache")
    p.add_argument("action", choices=["info", "verify", "prune"], help="info, verify or prune")
    p.add_argument("--cache-dir", default=None, help="vector cache (default: $BERTFEAT_CACHE or ~/.cache/bertfeat)")
    p.add_argument("--model", default=None, help="prune: entries of this encoder model")
    p.add_argument("--fingerprint", default=None, help="prune: the entry with this fingerprint (or prefix)")
    p.add_argument("--older-than", type=float, default=None, metavar="DAYS", help="prune: entries idle this long")
    p.add_argument("--all", action="store_true", help="prune: every entry, model export and quarantined shard")
    p.add_argument("--quarantine", action="store_true", help="prune: the damaged shards moved to quarantine/")
    p.add_argument("--leftovers", action="store_true", help="prune: also files left by killed runs (>1 h old)")
    p.add_argument("--dry-run", action="store_true", help="prune: list, remove nothing")
    _output_flags(p)

    p = command("predict", [], "label new texts with a saved model folder")
    p.add_argument("--model-dir", required=True, help="folder written by fit, bench (best-model/) or finetune")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to label (repeatable)")
    src.add_argument("--data", metavar="FILE",
                     help="file of texts (and the pair column, for a pair model); with a label column, accuracy "
                          "is reported")
    p.add_argument("--pair", action="append", help="the second text of each --text, for a model fit with --pair-col")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a pickled head (lgbm): unpickling runs code from the folder; only for folders you trust")
    p.add_argument("--cache-write", action="store_true",
                   help="store the vectors computed here in the cache (default: read it only, add nothing)")
    p.add_argument("--threshold", type=float, metavar="P",
                   help="multi-label models: give a text every label of probability >= P (default: the per-label "
                        "thresholds chosen by cross-validation, kept in the model folder)")
    _runtime_flags(p)
    _output_flags(p)

    _labels_parser(command("labels", [enc], "find training rows whose label looks wrong (confident learning)"))
    _serve_parser(command("serve", [], "serve model folders over HTTP, concurrent requests batched together"))
    return parser


def _track_flag(g) -> None:
    g.add_argument("--track", nargs="?", const="", default=None, metavar="URI",
                   help="log the run, its candidates and the model to MLflow at URI (default with no URI: "
                        "sqlite:///runs/mlflow.db); needs pip install 'bertfeat[track]'")


def _labels_parser(p) -> None:
    d = o.LabelsConfig
    g = p.add_argument_group("labelled data and the head")
    g.add_argument("--train", required=True, metavar="FILE", help="labelled file to check (or folder, or glob)")
    _label_flags(g)
    g.add_argument("--head", default=d.head, choices=o.HEAD_NAMES,
                   help="head whose out-of-fold probabilities rank the rows (default: %(default)s)")
    g.add_argument("--features", default=None, help="feature view, overriding --pooling/--layers (default: mean)")
    g.add_argument("--cv", type=int, default=d.cv, help="cross-validation folds (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed for the folds and the head (default: 0)")
    g.add_argument("--jobs", type=int, default=None, help="parallel worker processes (default: one per core)")
    g.add_argument("--top", type=int, default=20, help="rows to print (default: %(default)s; all in the CSV)")
    g.add_argument("--out", default=None, help="output folder, new or empty (default: runs/<time>-labels)")


def _serve_parser(p) -> None:
    p.add_argument("--model-dir", action="append", required=True, metavar="[NAME=]DIR",
                   help="model folder to serve, named NAME (default: the folder's name); repeatable: each is "
                        "at POST /models/NAME/predict, and a single one also at POST /predict")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine "
                                                       "only; 0.0.0.0 for every network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: %(default)s)")
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch", type=int, default=128,
                   help="most texts gathered into one forward pass; 1 turns batching off (default: %(default)s)")
    g.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="most milliseconds a batch waits for more requests, when the last load says more are "
                        "coming (default: %(default)s)")
    g.add_argument("--max-queue", type=int, default=1024,
                   help="requests waiting for a forward pass; past that, 503 busy (default: %(default)s)")
    g = p.add_argument_group("request limits (past them: a 4xx JSON error, the server goes on)")
    g.add_argument("--max-texts", type=int, default=256, help="texts per request (default: %(default)s)")
    g.add_argument("--max-text-chars", type=int, default=10_000,
                   help="characters per text or pair (default: %(default)s)")
    g.add_argument("--max-body", type=int, default=2 * 2**20, metavar="BYTES",
                   help="bytes per request body (default: %(default)s)")
    g = p.add_argument_group("model")
    g.add_argument("--precision", default=None, choices=o.PRECISIONS,
                   help="forward pass precision (default: as trained where this machine has it, else auto)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    g.add_argument("--trust-pickle", action="store_true",
                   help="load a pickled head (lgbm): unpickling runs code from the folder; only for folders you trust")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only on stderr")
    p.set_defaults(json=False)


def _version() -> str:
    from bertfeat import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (0 ok, 1 a check found damage, 2 a user error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    flags = option_strings(parser)
    log_to_stderr(log, args.quiet, flags)
    try:
        from bertfeat.commands import COMMANDS

        result, code = COMMANDS[args.command](args)
    except BertfeatError as exc:
        print(f"error: {in_flags(str(exc), flags)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished cache shards are kept and a re-run resumes", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
