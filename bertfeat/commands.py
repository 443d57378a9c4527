"""What each CLI subcommand does: glue from files through extract/ and cache/ to classify/ and back.

Results go to stdout (a table, or the returned object as JSON); logs and progress bars go to stderr.
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np

from bertfeat.errors import BertfeatError, DataError
from bertfeat.steps import (base_encoder, cache_dir, check_flags, default_out, default_view, embed_views,
                            embedder, read_labelled, save_model, window_texts)

log = logging.getLogger("bertfeat")


# -- subcommands -------------------------------------------------------------------------------
def cmd_embed(args) -> dict:
    from bertfeat.extract.data import input_files

    check_flags(args)
    files = input_files(args.data)
    if args.engine == "ray":
        from bertfeat.extract.ray_engine import embed_on_ray

        if args.address and not args.cache_dir:
            raise BertfeatError("--engine ray --address: pass --cache-dir on storage every node can write "
                                "(a shared filesystem); each node's default cache would keep its own part")

        summary = embed_on_ray([base_encoder(args)], files, cache_dir(args), text_col=args.text_col,
                               pair_col=args.pair_col, encoding=args.encoding, drop_empty=args.drop_empty,
                               address=args.address, num_workers=args.num_workers,
                               gpus_per_worker=args.gpus_per_worker, block_texts=args.block_size,
                               shard_size=args.shard_size, progress=not args.quiet)
        done = f"embedded by {summary['num_workers']} Ray workers"
    else:
        from bertfeat.extract.data import iter_tables

        # One window of rows at a time, read, embedded and committed: memory does not grow with the corpus.
        tables = iter_tables(files, args.text_col, None, args.pair_col, args.encoding, args.drop_empty,
                             rows=window_texts(args))
        result = embedder(args, [base_encoder(args)]).fill(((t.texts, t.pairs) for t in tables), not args.quiet)
        summary = {**result.summary(), "dim": result.dims[0], "engine": "local"}
        done = f"embedded in {summary['seconds']:.1f} s; dim {summary['dim']}"
    summary["cache_dir"] = os.path.abspath(cache_dir(args))
    if not args.json:
        print(f"{summary['n_texts']} texts ({summary['n_unique']} unique): {summary['n_cached']} from the cache, "
              f"{summary['n_embedded']} {done}; cache {summary['cache_dir']}")
    return summary


def cmd_fit(args) -> dict:
    from bertfeat.classify import evaluate, format_report
    from bertfeat.classify.metrics import SUMMARY
    from bertfeat.classify.heads import head_info

    check_flags(args)
    info = head_info(args.head)  # an unknown head fails before any embedding work
    head = info.make(args.seed)
    if args.class_weight and info.streaming:
        raise BertfeatError(f"--class-weight with --head {args.head}: a head trained shard by shard cannot weigh "
                            "classes by counts it has not seen; use --head logreg")
    if args.tune_threshold and args.select != "macro_f1":
        raise BertfeatError("--tune-threshold tunes the decision threshold for macro-F1: add --select macro_f1")
    train, test, texts, pairs = read_labelled(args)
    spec = args.features or default_view(args)
    chosen = {}
    if info.streaming:
        encoders, emb, pred, fit_seconds = fit_streamed(args, head, spec, train, texts, pairs)
        dim = emb.dims[0]
    else:
        arrays, views, emb = embed_views(args, [spec], texts, pairs)
        encoders = views[spec]
        X_train, X_test = arrays[spec][:len(train.texts)], arrays[spec][len(train.texts):]
        dim = X_train.shape[1]
        log.info("fitting %s on %d x %d", args.head, *X_train.shape)
        t0 = time.perf_counter()
        head, chosen = fit_selected(args, head, X_train, train, X_test, test)
        fit_seconds = time.perf_counter() - t0
        pred = head.predict(X_test)
    metrics = evaluate(test.labels, pred)
    summary = {"metrics": {k: metrics[k] for k in SUMMARY}, "fit_seconds": fit_seconds,
               "n_train": len(train.texts), "n_test": len(test.texts), **chosen}
    model_dir = save_model(args, args.out or default_out(args.head), head, args.head, spec, encoders, emb,
                           summary, "fit")
    if not args.json:
        print(f"head {args.head} on {args.model} {spec} ({dim} dims): {len(train.texts)} train, "
              f"{len(test.texts)} test texts; fit {fit_seconds:.1f} s\n")
        if chosen:
            print(f"chosen by {args.cv}-fold CV {args.select}: {chosen['params'] or 'defaults'} "
                  f"(cv {chosen['cv_score']:.4f}); temperature {chosen['temperature']:.3f}"
                  + (f"; threshold {chosen['threshold']['threshold']:.2f}" if chosen.get("threshold") else "") + "\n")
        print(format_report(metrics))
        print(f"\nmodel saved to {model_dir}")
    return {**metrics, **chosen, "fit_seconds": round(fit_seconds, 3), "n_train": len(train.texts),
            "n_test": len(test.texts), "head": args.head, "features": spec, "model": args.model,
            "model_dir": model_dir, "embedding": emb.summary()}


def fit_selected(args, head, X_train, train, X_test, test):
    """`fit`'s head: plain; with --class-weight balanced, weighing classes equally; with --select, the grid
    setting (and, binary, --tune-threshold's threshold) with the best CV score, temperature-scaled on
    out-of-fold probabilities as in bench. Returns (fitted head, what was chosen: {} when nothing was)."""
    from bertfeat.classify.heads import balanced

    if not args.select:
        head = balanced(args.head, head, args.seed) if args.class_weight else head
        return head.fit(X_train, np.asarray(train.labels)), {}
    from bertfeat.classify.bench import run_bench
    from bertfeat.classify.tuning import fold_count

    cv = fold_count(train.labels, args.cv, train.source)
    views = {"features": (X_train, X_test)}
    _, (best, best_head, _, _), info = run_bench(views, train.labels, test.labels, [args.head], cv, True, args.seed,
                                              n_jobs=1, select=args.select, class_weight=args.class_weight,
                                              ensemble=False, tune_threshold=args.tune_threshold)
    return best_head, {"select": args.select, "cv": cv, "cv_score": best.cv_score, "params": best.params,
                       "temperature": best.temperature, "threshold": info.get("threshold"),
                       "ece_raw": best.ece_raw, "ece": best.ece, "log_loss": best.log_loss}


def fit_streamed(args, head, spec, train, texts, pairs):
    """Fit a streaming head from the cache shard by shard and predict the test rows the same way.

    Only texts the cache lacks are embedded here (for a large corpus, `embed --engine ray` first);
    the vectors are then read one shard at a time, so the training set may exceed memory.
    Returns (encoders, embedding summary, test predictions, fit seconds: reading shards included).
    """
    from bertfeat.cache import text_keys
    from bertfeat.classify.stream import fit_streaming, predict_streaming
    from bertfeat.extract import feature_encoders

    encoders = feature_encoders(spec, base_encoder(args))
    if len(encoders) != 1:
        raise BertfeatError(f"--head {args.head} streams one feature view from the cache; '{spec}' has "
                            f"{len(encoders)}: pass a single pooling, e.g. --features mean")
    embed = embedder(args, encoders)
    emb = embed(texts, pairs, not args.quiet, load=False)  # embeds only what the cache lacks
    store = embed.stores[0]  # its index, read once, already holds the shards just written
    keys = text_keys(texts, pairs)
    log.info("fitting %s from the cache, shard by shard", args.head)
    n_train = len(train.texts)
    t0 = time.perf_counter()
    fit_streaming(head, store, keys[:n_train], train.labels, seed=args.seed)
    fit_seconds = time.perf_counter() - t0
    return encoders, emb, predict_streaming(head, store, keys[n_train:]), fit_seconds


def cmd_bench(args) -> dict:
    from bertfeat.classify.bench import mteb_protocol, run_bench
    from bertfeat.classify.heads import head_info
    from bertfeat.classify.report import table, write_report
    from bertfeat.finetuning import finetune_methods, finetune_rows, mteb_finetune

    check_flags(args)
    from bertfeat.classify.heads import default_heads
    from bertfeat.classify.selection import DEFAULT_VIEWS

    halving = not args.heads and not args.features  # the default: views x heads by successive halving
    heads = _list_arg(args.heads, "--heads") if args.heads else default_heads()
    for name in heads:
        head_info(name)  # an unknown head fails before any embedding work
    ft_methods = finetune_methods(args.finetune)  # fine-tuned reference rows: bertfeat/finetuning.py
    if args.features:
        specs = _list_arg(args.features, "--features")
    else:  # the candidate views, unless --pooling/--layers name another one
        specs = list(DEFAULT_VIEWS) if default_view(args) == "mean" else [default_view(args)]
    if args.samples_per_label:
        specs = specs[:1]  # the MTEB protocol scores one view: embedding the others would be wasted
    train, test, texts, pairs = read_labelled(args)
    if not args.samples_per_label:  # before embedding: a class too small to cross-validate fails at once
        from bertfeat.classify.tuning import fold_count

        args.cv = fold_count(train.labels, args.cv, train.source)  # the folds used, as reported and saved
    arrays, views, emb = embed_views(args, specs, texts, pairs)
    n = len(train.texts)
    split = {spec: (a[:n], a[n:]) for spec, a in arrays.items()}
    if args.samples_per_label:
        X_train, X_test = split[specs[0]]
        result = mteb_protocol(X_train, train.labels, X_test, test.labels, args.samples_per_label,
                               args.n_experiments, args.seed)
        result["features"] = specs[0]
        if ft_methods:  # SetFit on the very samples of each experiment
            result["finetune"] = mteb_finetune(args, ft_methods, train, test)
        if not args.json:
            print(f"MTEB protocol, {specs[0]}: accuracy {100 * result['accuracy_mean']:.2f} "
                  f"± {100 * result['accuracy_std']:.2f} over {args.n_experiments} experiments of "
                  f"{args.samples_per_label} samples per label")
        return result

    def progress(r):
        log.info("%-7s %-12s cv %.4f  test acc %.4f  macro-F1 %.4f  (%.1f s)", r.head, r.features, r.cv_score,
                 r.accuracy, r.macro_f1, r.fit_seconds)

    t0 = time.perf_counter()
    results, (best, best_head, best_metrics, best_probas), selection = run_bench(
        split, train.labels, test.labels, heads, args.cv, not args.no_tune, args.seed, progress, args.jobs,
        select=args.select, class_weight=args.class_weight, halving=halving, budget=args.budget,
        ensemble=args.vote and halving, tune_threshold=args.tune_threshold)
    rows = [r.as_dict() for r in results]
    if ft_methods:  # marked fine_tuned; in the table, JSON, results.md and plots, not in best-by-CV
        rows += finetune_rows(args, ft_methods, train, test)
        # a candidate dropped after round 1 has no test scores (None): it stays last, as in the frozen table
        rows.sort(key=lambda r: (r["macro_f1"] is None, -(r["macro_f1"] or 0.0), r["head"], r["features"]))
    context = {"train": args.train, "test": args.test or f"{args.test_size:.0%} of train", "model": args.model,
               "n_train": n, "n_test": len(test.texts), "cv": args.cv, "tune": not args.no_tune,
               "select": args.select, "class_weight": args.class_weight, "selection": selection,
               "bench_seconds": time.perf_counter() - t0, "embedding": emb.summary()}
    summary = {"metrics": {k: best_metrics[k] for k in ("accuracy", "macro_f1")}, "bench": rows,
               "n_train": n, "n_test": len(test.texts)}
    out = args.out or default_out("bench")
    if best.features not in views:  # a soft vote reads the union of its members' views
        from bertfeat.extract import feature_encoders

        views[best.features] = feature_encoders(best.features, base_encoder(args))
    model_dir = save_model(args, os.path.join(out, "best-model"), best_head, best.head, best.features,
                           views[best.features], emb, summary, "bench")
    files = write_report(out, rows, best.as_dict(), best_metrics, context, best_probas,
                         [str(c) for c in best_head.classes_], test.labels)
    if not args.json:
        print(table(rows))
        for s in selection["skipped"]:
            print(f"skipped {s['head']} on {s['features']}: {s['why']}")
        print(f"\nbest by {args.cv}-fold CV {args.select}: {best.head} on {best.features} (cv {best.cv_score:.4f}, "
              f"test accuracy {best.accuracy:.4f}, ECE {best.ece_raw:.4f} -> {best.ece:.4f} calibrated); "
              f"model saved to {model_dir}")
        print(f"report: {', '.join(files)}")
    return {"results": rows, "best": best.as_dict(), "selection": selection, "model_dir": model_dir,
            "out": os.path.abspath(out), "seconds": round(context["bench_seconds"], 2), "embedding": emb.summary()}


def _list_arg(value: str, flag: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise BertfeatError(f"{flag} is empty; give a comma-separated list")
    return items


def cmd_predict(args):
    from bertfeat.api import load
    from bertfeat.classify import evaluate
    from bertfeat.extract import read_table

    check_flags(args)
    if args.text:  # before the model loads: an empty --text fails in one line, as an empty row of --data does
        texts, pairs = given_texts(args.text, args.pair, args.drop_empty)
        labels = None
    clf = load(args.model_dir, trust_pickle=args.trust_pickle, precision=args.precision, device=args.device,
               batch_size=args.batch_size, cache_dir=cache_dir(args), progress=not args.quiet)
    if not args.text:
        if args.pair:
            raise BertfeatError("--pair goes with --text; --data reads pairs from the file's pair column "
                                f"(the model's: {clf.pair_col or 'none, it takes single texts'})")
        manifest = clf.manifest
        table = read_table(args.data, manifest["text_col"], manifest["label_col"], manifest["pair_col"],
                           args.encoding, args.drop_empty, label_optional=True,
                           columns_from=f"the model in {args.model_dir} (fit with these columns)")
        texts, pairs, labels = table.texts, table.pairs, table.labels
    proba = clf.predict_proba(texts, pairs=pairs)
    classes = list(clf.classes_)
    best = proba.argmax(1)
    rows = [{"text": t, "label": classes[b], "proba": round(float(p[b]), 6)} for t, b, p in zip(texts, best, proba)]
    if pairs is not None:
        for row, pair in zip(rows, pairs):
            row["pair"] = pair
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
        print(f"{r['label']:<{width}}{r['proba']:.3f}    {r['text']}" + (f"  |  {r['pair']}" if "pair" in r else ""))
    if accuracy is not None:
        print(f"\naccuracy {accuracy:.4f} on {len(rows)} labelled texts")
    return rows


def given_texts(texts: list[str], pairs: list[str] | None, drop_empty: bool):
    """predict's --text (and --pair) values, held to the rule a file's rows are held to: an empty text is
    an error, or skipped with --drop-empty."""
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


def cmd_cache(args) -> dict:
    from bertfeat.cache import admin
    from bertfeat.cache.exports import verify_exports

    root = cache_dir(args)
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
                "quarantined": quarantined}
    if args.action == "verify":
        report = admin.verify(root)
        checked = verify_exports(root)  # every export folder, with or without a readable meta.json
        report["exports"] = checked["exports"]
        report["damaged"] += [{"export": d["key"], "problem": f"model export {d['folder']}: {d['problem']} "
                               "(exported again on next use)"} for d in checked["damaged"]]
        for d in report["damaged"]:
            log.error("damaged: %s", d["problem"])
        for d in report["unreadable"]:
            log.error("cannot read: %s", d["problem"])
        if not args.json:
            print(f"{report['shards']} shards and {report['exports']} model exports checked: "
                  f"{len(report['damaged'])} damaged, "
                  f"{len(report['unreadable'])} unreadable, {len(report['quarantined'])} in quarantine, "
                  f"{len(report['leftovers'])} leftover files of interrupted runs (never served)")
        args.exit_code = 1 if report["damaged"] or report["unreadable"] else 0
        return report
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
    return {**done, "dry_run": args.dry_run}


def cmd_finetune(args) -> dict:
    from bertfeat.finetuning import cmd_finetune as run

    return run(args)


COMMANDS = {"bench": cmd_bench, "cache": cmd_cache, "embed": cmd_embed, "finetune": cmd_finetune, "fit": cmd_fit,
            "predict": cmd_predict}
