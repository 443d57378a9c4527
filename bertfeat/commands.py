"""The command line's subcommands: argparse namespace -> options dataclass -> the Python API -> printed
results. Each returns ``(result, exit code)``; the result is what ``--json`` prints.

Nothing here computes: it only adapts (``bertfeat.api`` and the modules under it do the work), so the
library and the command line cannot drift apart.
"""
from __future__ import annotations

import logging
import os
import time

from bertfeat import options as o
from bertfeat.errors import BertfeatError

log = logging.getLogger("bertfeat")


def cmd_embed(args):
    from bertfeat.extract.data import input_files, iter_tables
    from bertfeat.steps import base_encoder, cache_root, embedder, window_texts

    config = o.from_namespace(o.EmbedConfig, args)
    files = input_files(args.data)
    if config.engine == "ray":
        from bertfeat.extract.ray_engine import embed_on_ray

        if config.address and not config.cache_dir:
            raise BertfeatError("--engine ray --address: pass --cache-dir on storage every node can write "
                                "(a shared filesystem); each node's default cache would keep its own part")
        summary = embed_on_ray([base_encoder(config)], files, cache_root(config), text_col=config.text_col,
                               pair_col=config.pair_col, encoding=config.encoding, drop_empty=config.drop_empty,
                               address=config.address, num_workers=config.num_workers,
                               gpus_per_worker=config.gpus_per_worker, block_texts=config.block_size,
                               shard_size=config.shard_size, progress=config.progress)
        done = f"embedded by {summary['num_workers']} Ray workers"
    else:
        # One window of rows at a time, read, embedded and committed: memory does not grow with the corpus.
        tables = iter_tables(files, config.text_col, None, config.pair_col, config.encoding, config.drop_empty,
                             rows=window_texts(config))
        result = embedder(config, [base_encoder(config)]).fill(((t.texts, t.pairs) for t in tables),
                                                               config.progress)
        summary = {**result.summary(), "dim": result.dims[0], "engine": "local"}
        done = f"embedded in {summary['seconds']:.1f} s; dim {summary['dim']}"
    summary["cache_dir"] = os.path.abspath(cache_root(config))
    if not args.json:
        print(f"{summary['n_texts']} texts ({summary['n_unique']} unique): {summary['n_cached']} from the cache, "
              f"{summary['n_embedded']} {done}; cache {summary['cache_dir']}")
    return summary, 0


def cmd_fit(args):
    from bertfeat.api import run_fit
    from bertfeat.classify import format_report
    from bertfeat.classify.thresholds import format_multi_report
    from bertfeat.steps import check_out, default_out

    config = o.from_namespace(o.FitConfig, args)
    check_out(args.out)
    clf = run_fit(config, args.train, args.test)
    report = clf.report_
    model_dir = clf.save(args.out or default_out(config.head))
    if config.track is not None:
        from bertfeat.tracking import log_fit

        report = {**report, "mlflow": log_fit(clf, model_dir, config.track, args.train, args.test)}
    if not args.json:
        chosen = clf.selection_
        print(f"head {config.head} on {config.model} {clf.view()} ({report['dims']} dims): "
              f"{report['n_train']} train, {report['n_test']} test texts; fit {report['fit_seconds']:.1f} s\n")
        if clf.multi_label:
            print(f"thresholds chosen by {chosen['cv']}-fold CV {chosen['select']}: {chosen['rule']} rule"
                  f"{', at least one label a text' if chosen['at_least_one'] else ''} (cv {chosen['cv_score']:.4f})\n")
            print(format_multi_report(report))
        else:
            if chosen:
                print(f"chosen by {chosen['cv']}-fold CV {chosen['select']}: {chosen['params'] or 'defaults'} "
                      f"(cv {chosen['cv_score']:.4f}); temperature {chosen['temperature']:.3f}"
                      + (f"; threshold {chosen['threshold']['threshold']:.2f}" if chosen.get("threshold") else "")
                      + "\n")
            print(format_report(report))
        print(f"\nmodel saved to {model_dir}")
    return {**report, "model_dir": model_dir}, 0


def cmd_bench(args):
    from bertfeat import benching
    from bertfeat.classify.report import table
    from bertfeat.inputs import labelled
    from bertfeat.steps import check_out, default_out

    config = o.from_namespace(o.BenchConfig, args)
    check_out(args.out)
    res = benching.run(config, *labelled(args.train, args.test, config))
    if res.mteb is not None:
        m = res.mteb
        if args.out:  # no model to keep, but --out still gets what was scored (it was silently ignored)
            from bertfeat.cache import atomic_write_json

            os.makedirs(args.out, exist_ok=True)
            atomic_write_json(os.path.join(args.out, "results.json"), m)
        if not args.json:
            print(f"MTEB protocol, {m['features']}: accuracy {100 * m['accuracy_mean']:.2f} "
                  f"± {100 * m['accuracy_std']:.2f} over {config.n_experiments} experiments of "
                  f"{config.samples_per_label} samples per label")
            if "finetune" in m:
                f = m["finetune"]
                print(f"fine-tuned setfit, same samples: accuracy {100 * f['accuracy_mean']:.2f} "
                      f"± {100 * f['accuracy_std']:.2f}, {f['fit_seconds_mean']:.1f} s per experiment")
        return m, 0
    out = res.save(args.out or default_out("bench"))
    model_dir = os.path.join(out, "best-model")
    tracked = {}
    if config.track is not None:
        from bertfeat.tracking import log_bench

        tracked = {"mlflow": log_bench(res, out, config.track)}
    best = res.best_row
    if not args.json and res.selection.get("task") == "multi-label":
        from bertfeat.classify.report_multi import COLUMNS, best_line

        print(table(res.rows, COLUMNS))
        print(f"\n{best_line(best, res._report['context'])}; model saved to {model_dir}")
    elif not args.json:
        print(table(res.rows))
        for s in res.selection["skipped"]:
            print(f"skipped {s['head']} on {s['features']}: {s['why']}")
        print(f"\nbest by {res._report['context']['cv']}-fold CV {res.config.select}: {best['head']} on "
              f"{best['features']} (cv {best['cv_score']:.4f}, test accuracy {best['accuracy']:.4f}, ECE "
              f"{best['ece_raw']:.4f} -> {best['ece']:.4f} calibrated); model saved to {model_dir}")
    if not args.json:
        print(f"report: {', '.join(os.path.join(out, n) for n in sorted(os.listdir(out)) if n != 'best-model')}")
        if res.finetune_probe:  # the advice line last, where a reader finishes
            auto = res.finetune_probe.get("auto")
            print(res.finetune_probe["advice"] + (f"\n--finetune auto: {auto}" if auto else ""))
    return {**res.as_dict(), "model_dir": model_dir, "out": out, **tracked}, 0


def cmd_labels(args):
    from bertfeat.api import run_labels
    from bertfeat.cache import atomic_write
    from bertfeat.inputs import table_of
    from bertfeat.steps import check_out, default_out

    config = o.from_namespace(o.LabelsConfig, args)
    check_out(args.out)
    issues = run_labels(config, table_of(args.train, config, "train"))
    out = os.path.abspath(args.out or default_out("labels"))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "label_issues.csv")
    atomic_write(path, lambda fh: fh.write(issues.to_csv(index=False).encode()))
    if not args.json:
        top = issues.head(max(args.top, 0)).to_dict("records")
        width = max([len(str(r[c])) for r in top for c in ("given", "suggested")] + [9])
        print(f"{'row':>6}  {'given':<{width}}  {'suggested':<{width}}  score  text")
        for r in top:
            print(f"{r['row']:>6}  {str(r['given']):<{width}}  {str(r['suggested']):<{width}}  {r['score']:.3f}  "
                  f"{r['text']}")
        print(f"\n{len(issues)} rows look mislabelled; all of them, most likely first, in {path}")
    return {"n_issues": len(issues), "issues": issues.head(max(args.top, 0)).to_dict("records"), "csv": path}, 0


def cmd_finetune(args):
    from bertfeat.finetuning import print_report, run_finetune
    from bertfeat.inputs import labelled

    config = o.from_namespace(o.FinetuneConfig, args)
    result = run_finetune(config, *labelled(args.train, args.test, config), args.out)
    if not args.json:
        print_report(result, result)
    return result, 0


def cmd_predict(args):
    from bertfeat.classify import evaluate
    from bertfeat.extract import read_table
    from bertfeat.model_folder import load

    if args.text:  # before the model loads: an empty --text fails in one line, as an empty row of --data does
        texts, pairs = given_texts(args.text, args.pair, args.drop_empty)
        labels = None
    clf = load(args.model_dir, trust_pickle=args.trust_pickle, precision=args.precision, device=args.device,
               batch_size=args.batch_size, cache_dir=args.cache_dir, progress=not args.quiet,
               cache_write=args.cache_write)
    if not args.text:
        if args.pair:
            raise BertfeatError("--pair goes with --text; --data reads pairs from the file's pair column "
                                f"(the model's: {clf.pair_col or 'none, it takes single texts'})")
        manifest = clf.manifest_
        table = read_table(args.data, manifest["text_col"], manifest["label_col"], manifest["pair_col"],
                           args.encoding, args.drop_empty, label_optional=True,
                           columns_from=f"the model in {args.model_dir} (fit with these columns)",
                           label_sep=manifest.get("label_sep"), label_cols=manifest.get("label_cols"),
                           task="multi" if clf.multi_label else "auto")
        texts, pairs, labels = table.texts, table.pairs, table.labels
    proba = clf.predict_proba(texts, pairs=pairs)
    if clf.multi_label:
        return _predict_multi(args, clf, texts, pairs, labels, proba)
    if args.threshold is not None:
        raise BertfeatError("--threshold is for multi-label models; this one gives one label per text")
    classes = list(clf.classes_)
    best = proba.argmax(1)
    rows = [{"text": t, "label": _plain(classes[b]), "proba": round(float(p[b]), 6)}
            for t, b, p in zip(texts, best, proba)]
    if pairs is not None:
        for row, pair in zip(rows, pairs):
            row["pair"] = pair
    accuracy = None
    if labels is not None:
        for row, true in zip(rows, labels):
            row["true_label"] = true
        accuracy = evaluate([str(v) for v in labels], [str(r["label"]) for r in rows])["accuracy"]
        if args.json:  # the table prints it on stdout
            log.info("accuracy %.4f on %d labelled texts", accuracy, len(rows))
    if args.json:
        return rows, 0
    width = max(len(str(c)) for c in classes) + 2
    for r in rows:
        pair = f"  |  {r['pair']}" if "pair" in r else ""
        print(f"{str(r['label']):<{width}}{r['proba']:.3f}    {r['text']}{pair}")
    if accuracy is not None:
        print(f"\naccuracy {accuracy:.4f} on {len(rows)} labelled texts")
    return rows, 0


def _predict_multi(args, clf, texts, pairs, labels, proba):
    """predict for a multi-label model: every label a text gets, with each label's probability."""
    from bertfeat.classify.multilabel import indicator
    from bertfeat.classify.thresholds import evaluate_rows

    classes = [_plain(c) for c in clf.classes_]
    given = clf.labels_of(proba, args.threshold)
    rows = [{"text": t, "labels": g, "probas": {str(c): round(float(v), 6) for c, v in zip(classes, p)}}
            for t, g, p in zip(texts, given, proba)]
    for row, pair in zip(rows, pairs or []):
        row["pair"] = pair
    scores = None
    if labels is not None:
        for row, true in zip(rows, labels):
            row["true_labels"] = list(true)
        D, _ = indicator([tuple(g) for g in given], clf.classes_)
        thresholds = clf.head_.thresholds if args.threshold is None else args.threshold
        scores = evaluate_rows(labels, clf.classes_, D, proba, thresholds)
        line = (f"macro-F1 {scores['macro_f1']:.4f}, micro-F1 {scores['micro_f1']:.4f}, subset accuracy "
                f"{scores['subset_accuracy']:.4f} on {len(rows)} labelled texts")
        if args.json:  # the table prints it on stdout
            log.info(line)
    if args.json:
        return rows, 0
    sep = clf.manifest_.get("label_sep") or "; "
    for r in rows:
        shown = sep.join(f"{lab} ({r['probas'][str(lab)]:.2f})" for lab in r["labels"]) or "(none)"
        pair = f"  |  {r['pair']}" if "pair" in r else ""
        print(f"{shown:<40}  {r['text']}{pair}")
    if scores is not None:
        print(f"\n{line}")
    return rows, 0


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def given_texts(texts: list[str], pairs: list[str] | None, drop_empty: bool):
    """predict's --text (and --pair) values, held to the rule a file's rows are held to: an empty text is
    an error, or skipped with --drop-empty."""
    from bertfeat.errors import DataError
    from bertfeat.extract.data import is_blank

    if pairs is not None and len(pairs) != len(texts):
        raise BertfeatError(f"{len(texts)} --text but {len(pairs)} --pair; give one --pair after each --text")
    empty = [i for i, text in enumerate(texts) if is_blank(text)]
    if empty and not drop_empty:
        which = ", ".join(str(i + 1) for i in empty)
        raise DataError(f"--text number{'s' if len(empty) > 1 else ''} {which} (of {len(texts)}) "
                        f"{'are' if len(empty) > 1 else 'is'} empty: only spaces or invisible characters; "
                        "give a text, or pass --drop-empty to skip empty ones")
    if empty:
        log.warning("skipping %d empty --text (--drop-empty)", len(empty))
    keep = sorted(set(range(len(texts))) - set(empty))
    if not keep:
        raise DataError(f"all {len(texts)} --text are empty; nothing to label")
    return [texts[i] for i in keep], [pairs[i] for i in keep] if pairs is not None else None


def cmd_cache(args):
    from bertfeat.cache import admin, default_cache_dir
    from bertfeat.cache.exports import verify_exports

    root = args.cache_dir or default_cache_dir()
    if args.action == "info":
        entries, exports, quarantined = admin.entries(root), admin.exports(root), admin.quarantined(root)
        damaged = {d["key"]: d["problem"] for d in verify_exports(root, deep=False)["damaged"]}  # sizes only
        for x in exports:
            x["problem"] = damaged.get(x["key"])
        if not args.json:
            print(f"cache {os.path.abspath(root)}: {len(entries)} encoder entries, "
                  f"{sum(e['bytes'] for e in entries) / 2**20:.1f} MiB")
            for e in entries:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["modified"]))
                print(f"  {e['fingerprint'][:12]}  {e['model']}  pooling={e['pooling']} layers={e['layers']} "
                      f"max_length={e['max_length']}  {e['rows']} vectors in {e['shards']} shards, "
                      f"{e['bytes'] / 2**20:.1f} MiB, last write {when}")
            if exports:
                print(f"model exports (models/, rebuilt on demand): {len(exports)}, "
                      f"{sum(x['bytes'] for x in exports) / 2**20:.1f} MiB")
            for x in exports:
                print(f"  {x['key'][:12]}  {x['model']}  {x['precision']}  {x['bytes'] / 2**20:.1f} MiB"
                      + (f"  damaged: {x['problem']} (exported again on next use)" if x["problem"] else ""))
            if quarantined:
                print(f"quarantine (damaged shards moved aside; `cache prune --quarantine` clears them): "
                      f"{len(quarantined)}, {sum(q['bytes'] for q in quarantined) / 2**20:.1f} MiB")
            for q in quarantined:
                print(f"  {q['path']}  {q['problem']}")
        return {"cache_dir": os.path.abspath(root), "entries": entries, "exports": exports,
                "quarantined": quarantined}, 0
    if args.action == "verify":
        report = admin.verify(root)  # shards and every export folder, each damaged one listed once
        for d in report["damaged"]:
            log.error("damaged: %s", d["problem"])
        for d in report["unreadable"]:
            log.error("cannot read: %s", d["problem"])
        if not args.json:
            print(f"{report['shards']} shards and {report['exports']} model exports checked: "
                  f"{len(report['damaged'])} damaged, "
                  f"{len(report['unreadable'])} unreadable, {len(report['quarantined'])} in quarantine, "
                  f"{len(report['leftovers'])} leftover files of interrupted runs (never served)")
        return report, 1 if report["damaged"] or report["unreadable"] else 0
    done = admin.prune(root, args.model, args.fingerprint, args.older_than, args.all, args.quarantine,
                       args.leftovers, args.dry_run)
    for s in done["skipped"]:
        log.warning("kept %s: %s", s["path"], s["reason"])
    if not args.json:
        verb = "would remove" if args.dry_run else "removed"
        for path in done["paths"]:
            print(f"{verb} {path}")
        print(f"{verb} {len(done['removed'])} entries ({sum(e['bytes'] for e in done['removed']) / 2**20:.1f} MiB), "
              f"{len(done['paths'])} paths in all" + (f"; kept {len(done['skipped'])}" if done["skipped"] else ""))
    return {**done, "dry_run": args.dry_run}, 0


def cmd_serve(args):
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise BertfeatError(f"bertfeat serve needs {exc.name or 'fastapi'}, which is not installed: "
                            "pip install 'bertfeat[serve]'") from None
    from bertfeat import serve

    options = serve.ServeOptions(
        host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_texts=args.max_texts, max_text_chars=args.max_text_chars, max_body=args.max_body,
        max_queue=args.max_queue, precision=args.precision, device=args.device, trust_pickle=args.trust_pickle)
    options.check()
    dirs = serve.model_dirs(args.model_dir)
    sock = serve.listen(options.host, options.port)  # a taken port fails before the models load
    return None, serve.run(serve.load_models(dirs, options), options, quiet=args.quiet, sock=sock)


COMMANDS = {"bench": cmd_bench, "cache": cmd_cache, "embed": cmd_embed, "finetune": cmd_finetune, "fit": cmd_fit,
            "labels": cmd_labels, "predict": cmd_predict, "serve": cmd_serve}
