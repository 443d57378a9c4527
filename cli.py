"""bertfeat command line: parse arguments, call extract / cache / classify, print results.

Results go to stdout (a table, or one JSON object with --json); logs and progress bars go to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from errors import BertfeatError

log = logging.getLogger("bertfeat")

EXAMPLES = {
    "embed": """example:
  python cli.py embed --data data/demo/train.csv --json
  {"n_texts": 320, "n_unique": 320, "n_cached": 0, "n_embedded": 320, ...}
  (a second identical run reports "n_embedded": 0: every vector comes from the cache)""",
    "fit": """example:
  python cli.py fit --train data/demo/train.csv --test data/demo/test.csv --head logreg
  (embeds what the cache lacks, fits the head, prints the metrics, saves runs/<time>-logreg/)""",
    "cache": """examples:
  python cli.py cache info                      # entries per encoder: rows, size, last write
  python cli.py cache verify                    # checksums of every shard; exit 1 on damage
  python cli.py cache prune --older-than 30     # remove entries not written for 30 days
  python cli.py cache prune --model all-MiniLM-L6-v2 --dry-run""",
    "predict": """example:
  python cli.py predict --model-dir runs/demo-logreg --text "my parcel never arrived"
  delivery    0.912    my parcel never arrived""",
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one `error:` line and exit code 2, like every other user error."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _encoder_flags() -> argparse.ArgumentParser:
    from extract import DEFAULT_MODEL, POOLINGS
    from extract.encoder import PRECISIONS

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
    g.add_argument("--precision", default="fp32", choices=PRECISIONS, help="forward-pass precision")
    g.add_argument("--batch-size", type=int, default=128, help="most texts per forward batch")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    g.add_argument("--cache-dir", default=None, help="vector cache (default: $BERTFEAT_CACHE or ~/.cache/bertfeat)")
    g.add_argument("--text-col", default="text", help="column with the text (default: %(default)s)")
    g.add_argument("--pair-col", default=None, help="column with a second text, for sentence-pair tasks")
    g.add_argument("--encoding", default="utf-8", help="text encoding of CSV/TSV/JSONL files")
    g.add_argument("--drop-empty", action="store_true", help="skip rows with empty text instead of failing")
    g.add_argument("--chunk-size", type=int, default=2048,
                   help="texts per committed cache shard: what a killed run can lose at most")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    g.add_argument("--quiet", action="store_true", help="no progress bar or info logs")
    return p


def build_parser() -> argparse.ArgumentParser:
    from classify import HEADS

    enc = _encoder_flags()
    parser = Parser(prog="cli.py", description="Text classification on frozen BERT features.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("embed", parents=[enc], help="embed texts into the cache", epilog=EXAMPLES["embed"],
                       formatter_class=fmt)
    p.add_argument("--data", action="append", required=True, metavar="FILE",
                   help="CSV, TSV, JSONL or Parquet file (repeatable)")

    p = sub.add_parser("fit", parents=[enc], help="fit a head on cached vectors and evaluate it",
                       epilog=EXAMPLES["fit"], formatter_class=fmt)
    p.add_argument("--train", required=True, metavar="FILE", help="labelled training file")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--test", metavar="FILE", help="labelled test file")
    split.add_argument("--test-size", type=float, default=0.2, help="held-out share of --train when no --test")
    p.add_argument("--head", default="logreg", choices=sorted(HEADS), help="classifier head (default: %(default)s)")
    p.add_argument("--label-col", default="label", help="column with the label (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split and the head")
    p.add_argument("--out", default=None, help="model folder (default: runs/<time>-<head>)")

    p = sub.add_parser("cache", help="inspect, verify or prune the vector cache", epilog=EXAMPLES["cache"],
                       formatter_class=fmt)
    p.add_argument("action", choices=["info", "verify", "prune"])
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--model", default=None, help="prune: entries of this encoder model")
    p.add_argument("--fingerprint", default=None, help="prune: the entry with this fingerprint (or prefix)")
    p.add_argument("--older-than", type=float, default=None, metavar="DAYS", help="prune: entries idle this long")
    p.add_argument("--all", action="store_true", help="prune: everything")
    p.add_argument("--leftovers", action="store_true", help="prune: also files left by killed runs (>1 h old)")
    p.add_argument("--dry-run", action="store_true", help="prune: list, remove nothing")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("predict", help="label new texts with a saved model folder", epilog=EXAMPLES["predict"],
                       formatter_class=fmt)
    p.add_argument("--model-dir", required=True, help="folder written by fit or bench")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to label (repeatable)")
    src.add_argument("--data", metavar="FILE", help="file of texts; with a label column, accuracy is reported")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--drop-empty", action="store_true")
    p.add_argument("--json", action="store_true", help="print a JSON list of {text, label, proba}")
    p.add_argument("--quiet", action="store_true")
    return parser


def make_encoder(args):
    from extract import BertEncoder

    return BertEncoder(model=args.model, pooling=args.pooling, layers=args.layers, max_length=args.max_length,
                       normalize=args.normalize, precision=args.precision, batch_size=args.batch_size,
                       device=args.device)


def cache_dir(args) -> str:
    from cache import default_cache_dir

    return args.cache_dir or default_cache_dir()


def run_embed(args, encoders, texts, pairs):
    from extract import embed
    from extract.pipeline import CHUNK_TEXTS

    chunk = getattr(args, "chunk_size", CHUNK_TEXTS)
    if chunk < 1:
        raise BertfeatError(f"bad --chunk-size {chunk}; expected a positive number of texts")
    return embed(encoders, texts, pairs, cache_dir(args), progress=not args.quiet, chunk_size=chunk)


def cmd_embed(args) -> dict:
    from extract import read_table

    table = read_table(args.data, args.text_col, None, args.pair_col, args.encoding, args.drop_empty)
    result = run_embed(args, [make_encoder(args)], table.texts, table.pairs)
    summary = result.summary()
    summary["dim"] = summary["dim"][0]
    summary["cache_dir"] = os.path.abspath(cache_dir(args))
    if not args.json:
        print(f"{summary['n_texts']} texts ({summary['n_unique']} unique): {summary['n_cached']} from the cache, "
              f"{summary['n_embedded']} embedded in {summary['seconds']:.1f} s; dim {summary['dim']}; "
              f"cache {summary['cache_dir']}")
    return summary


def _split(train, test_size: float, seed: int):
    from sklearn.model_selection import train_test_split

    from extract import Table

    if not 0 < test_size < 1:
        raise BertfeatError(f"bad --test-size {test_size}; expected a fraction between 0 and 1, e.g. 0.2")
    idx = list(range(len(train.texts)))
    try:
        a, b = train_test_split(idx, test_size=test_size, random_state=seed, stratify=train.labels)
    except ValueError:  # a class with a single row cannot be stratified
        log.warning("%s: some classes are too small to stratify the split; splitting at random", train.source)
        a, b = train_test_split(idx, test_size=test_size, random_state=seed)

    def take(rows, name):
        pick = lambda seq: [seq[i] for i in rows] if seq is not None else None  # noqa: E731
        return Table(pick(train.texts), pick(train.pairs), pick(train.labels), f"{train.source} ({name})",
                     pick(train.rows))

    return take(a, "train split"), take(b, "test split")


def cmd_fit(args) -> dict:
    import numpy as np

    from classify import evaluate, format_report, make_head, package_versions, save_model_dir
    from extract import read_table
    from extract.data import check_labels

    read = lambda path: read_table(path, args.text_col, args.label_col, args.pair_col,  # noqa: E731
                                   args.encoding, args.drop_empty)
    train = read(args.train)
    test = read(args.test) if args.test else None
    if test is None:
        train, test = _split(train, args.test_size, args.seed)
    for warning in check_labels(train, test):
        log.warning(warning)
    head = make_head(args.head, args.seed)  # fails on an unknown head before any embedding work
    encoder = make_encoder(args)
    pairs = train.pairs + test.pairs if train.pairs is not None else None
    emb = run_embed(args, [encoder], train.texts + test.texts, pairs)
    X = emb.vectors[0]
    X_train, X_test = X[:len(train.texts)], X[len(train.texts):]
    log.info("fitting %s on %d x %d", args.head, *X_train.shape)
    t0 = time.perf_counter()
    head.fit(X_train, np.asarray(train.labels))
    fit_seconds = time.perf_counter() - t0
    metrics = evaluate(test.labels, head.predict(X_test))
    out = args.out or os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{args.head}")
    settings = {k: v for k, v in vars(args).items() if k not in ("func",)}
    params = encoder.get_params()
    manifest = {"head": args.head, "encoder": params, "fingerprint": encoder.fingerprint(),
                "labels": [str(c) for c in head.classes_], "text_col": args.text_col, "label_col": args.label_col,
                "pair_col": args.pair_col}
    summary = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
               "weighted_f1": metrics["weighted_f1"], "macro_precision": metrics["macro_precision"],
               "macro_recall": metrics["macro_recall"]}
    run = {"command": "fit", "argv": sys.argv[1:], "settings": settings, "versions": package_versions(),
           "device": emb.device or "none (all vectors from the cache)", "embedding": emb.summary(), "metrics": summary,
           "fit_seconds": fit_seconds, "n_train": len(train.texts), "n_test": len(test.texts),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    model_dir = save_model_dir(out, head, manifest, run)
    result = {**metrics, "fit_seconds": round(fit_seconds, 3), "n_train": len(train.texts),
              "n_test": len(test.texts), "head": args.head, "model": args.model, "model_dir": model_dir,
              "embedding": emb.summary()}
    if not args.json:
        print(f"head {args.head} on {args.model} ({X.shape[1]} dims): {len(train.texts)} train, "
              f"{len(test.texts)} test texts; fit {fit_seconds:.1f} s\n")
        print(format_report(metrics))
        print(f"\nmodel saved to {model_dir}")
    return result


def cmd_cache(args) -> dict:
    from cache import admin

    root = cache_dir(args)
    if args.action == "info":
        entries = admin.entries(root)
        if not args.json:
            print(f"cache {os.path.abspath(root)}: {len(entries)} encoder entr{'y' if len(entries) == 1 else 'ies'}, "
                  f"{sum(e['bytes'] for e in entries) / 2**20:.1f} MiB")
            for e in entries:
                print(f"  {e['fingerprint'][:12]}  {e['model']}  pooling={e['pooling']} layers={e['layers']} "
                      f"max_length={e['max_length']}  {e['rows']} vectors in {e['shards']} shards, "
                      f"{e['bytes'] / 2**20:.1f} MiB, last write {time.strftime('%Y-%m-%d %H:%M', time.localtime(e['modified']))}")
        return {"cache_dir": os.path.abspath(root), "entries": entries}
    if args.action == "verify":
        report = admin.verify(root)
        for d in report["damaged"]:
            log.error("damaged: %s/%s: %s", d["fingerprint"], d["shard"], d["problem"])
        if not args.json:
            print(f"{report['shards']} shards checked: {len(report['damaged'])} damaged, "
                  f"{len(report['leftovers'])} leftover files of interrupted runs (never served)")
        args.exit_code = 1 if report["damaged"] else 0
        return report
    removed = admin.prune(root, args.model, args.fingerprint, args.older_than, args.all, args.dry_run)
    leftovers = admin.remove_leftovers(root) if args.leftovers and not args.dry_run else 0
    if not args.json:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} "
              f"({sum(e['bytes'] for e in removed) / 2**20:.1f} MiB)" + (f" and {leftovers} leftover files" if leftovers else ""))
    return {"removed": removed, "dry_run": args.dry_run, "leftovers_removed": leftovers}


def cmd_predict(args) -> dict | list:
    import numpy as np

    from classify import evaluate, load_head, read_manifest
    from extract import BertEncoder, read_table

    manifest = read_manifest(args.model_dir)
    params = {**manifest["encoder"], "device": args.device, "batch_size": args.batch_size}
    encoder = BertEncoder(**params)
    if encoder.fingerprint() != manifest["fingerprint"]:
        raise BertfeatError(
            f"--model-dir {args.model_dir}: the encoder '{params['model']}' found here is not the one this head "
            "was trained on (its weights or settings changed); fit the head again"
        )
    head = load_head(args.model_dir, manifest)
    if args.text:
        texts, pairs, labels = args.text, None, None
    else:
        table = read_table(args.data, manifest["text_col"], manifest["label_col"], manifest["pair_col"],
                           args.encoding, args.drop_empty, label_optional=True)
        texts, pairs, labels = table.texts, table.pairs, table.labels
    emb = run_embed(args, [encoder], texts, pairs)
    proba = head.predict_proba(emb.vectors[0])
    classes = [str(c) for c in head.classes_]
    best = np.argmax(proba, axis=1)
    rows = [{"text": t, "label": classes[b], "proba": round(float(p[b]), 6)} for t, b, p in zip(texts, best, proba)]
    accuracy = None
    if labels is not None:
        for row, true in zip(rows, labels):
            row["true_label"] = true
        accuracy = evaluate(labels, [r["label"] for r in rows])["accuracy"]
        if args.json:  # the table prints it on stdout
            log.info("accuracy %.4f on %d labelled texts", accuracy, len(rows))
    if args.json:
        return rows
    width = max(len(c) for c in classes) + 2
    for r in rows:
        print(f"{r['label']:<{width}}{r['proba']:.3f}    {r['text']}")
    if accuracy is not None:
        print(f"\naccuracy {accuracy:.4f} on {len(rows)} labelled texts")
    return rows


COMMANDS = {"cache": cmd_cache, "embed": cmd_embed, "fit": cmd_fit, "predict": cmd_predict}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s: %(message)s" if args.quiet else "%(message)s")
    try:
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
