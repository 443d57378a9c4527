"""The fine-tune probe (bertfeat/probe.py): bench says whether fine-tuning the encoder would gain, and
``--finetune auto`` acts on it; a full fine-tune that beats the frozen best on its held-out rows becomes
best-model. On the demo data with the tiny random BERT, so each bench takes seconds."""
import json
import os

import numpy as np
from conftest import DEMO_TEST, DEMO_TRAIN, data_rows, run_main

from bertfeat.cli import main
from bertfeat.probe import EXPONENT

FAST = ["--no-tune", "--cv", "2", "--heads", "logreg", "--quiet", "--probe-seconds", "600", "--finetune-probe"]


def _bench(capsys, tmp_path, tiny_bert, *extra, train=DEMO_TRAIN):
    out = tmp_path / "out"
    code = main(["bench", "--train", train, "--test", DEMO_TEST, "--model", tiny_bert, "--cache-dir",
                 str(tmp_path / "cache"), "--out", str(out), "--json", *FAST, *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out), out


def test_bench_reports_the_probe_in_json_md_and_html(capsys, tmp_path, tiny_bert, monkeypatch):
    from bertfeat import probe as probe_module

    res, _ = _bench(capsys, tmp_path / "few", tiny_bert)
    probe = res["finetune_probe"]  # 60 rows for 5 classes at m/4: too few per class for a learning curve
    assert probe["n_probe_small"] is None and not probe["extrapolated"] and probe["gain"] == probe["lower_bound"]
    assert "too few rows per class for a learning curve" in probe["advice"] or probe["recommend"]
    # the curve's arithmetic, with the per-class floor lowered to what the demo's 320 rows can give
    monkeypatch.setattr(probe_module, "MIN_PER_CLASS", 1)
    res, out = _bench(capsys, tmp_path, tiny_bert)
    probe = res["finetune_probe"]
    assert not probe.get("skipped"), probe
    # the demo's 320 training rows: a quarter held out; the rest (fewer than the smallest size) fine-tuned on,
    # and a quarter of them
    assert (probe["n_probe_val"], probe["n_probe_train"], probe["n_probe_small"]) == (80, 240, 60)
    assert not probe["more_rows_with_more_time"]  # the data, not the budget, stopped it at 240
    assert 0 <= probe["frozen_best_val"] <= 1 and 0 <= probe["probe_finetuned"] <= 1
    # against the frozen best's out-of-fold predictions on the same held-out rows; the estimate adds what the
    # fine-tune gains from 240 rows to the full fine-tune's 288, never less than nothing
    assert abs(probe["lower_bound"] - (probe["probe_finetuned"] - probe["frozen_best_val"])) < 1e-3
    a = EXPONENT
    grew = max(0.0, probe["probe_finetuned"] - probe["probe_finetuned_small"]) * (1 - (288 / 240) ** -a) / (4 ** a - 1)
    assert abs(probe["gain"] - probe["lower_bound"] - grew) < 1e-3
    assert isinstance(probe["recommend"], bool) and probe["noise"] > 0
    assert probe["estimated_full_seconds"] > 0 and 0 < probe["seconds"] <= probe["budget_seconds"]
    assert probe["frozen_score"] == round(res["best"]["cv_score"], 4)
    saved = json.loads((out / "results.json").read_text())
    assert saved["context"]["finetune_probe"]["gain"] == probe["gain"]
    assert probe["advice"] in (out / "results.md").read_text()
    assert "fine-tune probe" in (out / "results.html").read_text()


def test_the_probe_is_deterministic_and_measures_against_the_given_frozen_predictions(demo, tiny_bert):
    from bertfeat import options
    from bertfeat.probe import run_probe

    train = demo[0]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(train.texts), 32))  # the linear layer's start: any vectors will do
    classes, y = np.unique(train.labels, return_inverse=True)
    oof = rng.dirichlet(np.ones(len(classes)), size=len(train.texts))  # the frozen side's probabilities
    config = options.BenchConfig(model=tiny_bert, probe_seconds=600.0, progress=False)
    first, second = (run_probe(config, train, X, 0.5, 1.0, None, oof) for _ in range(2))
    keys = ("frozen_best_val", "probe_finetuned_small", "probe_finetuned", "gain", "noise", "recommend")
    assert not first.get("skipped") and [first[k] for k in keys] == [second[k] for k in keys]
    # a frozen side that is right on every row: nothing to gain, whatever the fine-tune does
    perfect = run_probe(config, train, X, 1.0, 1.0, None, np.eye(len(classes))[y])
    assert perfect["frozen_best_val"] == 1.0 and perfect["lower_bound"] <= 0 and perfect["recommend"] is False
    assert perfect["probe_finetuned"] == first["probe_finetuned"]  # the same fine-tune, another yardstick


def test_probe_skipped_with_its_reason_on_tiny_data(capsys, tmp_path, tiny_bert):
    small = data_rows(DEMO_TRAIN, tmp_path / "small.csv", 0, 80)
    res, out = _bench(capsys, tmp_path, tiny_bert, train=small)
    probe = res["finetune_probe"]
    assert probe["recommend"] is False and "80 training rows, fewer than 100" in probe["skipped"]
    assert "fine-tune probe: skipped (80 training rows" in (out / "results.md").read_text()


def test_the_probe_runs_by_default_and_no_finetune_probe_skips_it(capsys, tmp_path, tiny_bert):
    def bench(*flags):
        out = tmp_path / f"out{len(flags)}"
        assert main(["bench", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--model", tiny_bert, "--cache-dir",
                     str(tmp_path / "cache"), "--out", str(out), "--json", *FAST[:-3], *flags]) == 0
        return json.loads(capsys.readouterr().out), (out / "results.md").read_text()

    res, md = bench()  # a bench of a few seconds: a fifth of it cannot hold the probe, which says so
    assert "its budget of" in res["finetune_probe"]["skipped"] and "of the frozen bench's" in md
    res, md = bench("--no-finetune-probe")
    assert res["finetune_probe"] is None and "fine-tune probe" not in md


def test_finetune_auto_gives_the_probe_a_tenth_of_the_time_budget(demo, tiny_bert):
    from bertfeat import options
    from bertfeat.probe import run_probe

    train = demo[0]
    X = np.random.default_rng(0).normal(size=(len(train.texts), 32))
    oof = np.full((len(train.texts), len(set(train.labels))), 1 / len(set(train.labels)))
    config = options.BenchConfig(model=tiny_bert, progress=False)
    assert run_probe(config, train, X, 0.5, 5.0, None, oof)["skipped"].startswith("its budget of 1.0 s")
    for time_budget, seconds in ((5.0, 30.0), (20.0, 120.0), (None, 120.0)):  # 120 s at most
        auto = options.replace(config, finetune="auto", time_budget=time_budget)
        assert run_probe(auto, train, X, 0.5, 5.0, None, oof)["budget_seconds"] == seconds


def test_finetune_auto_follows_the_probe(capsys, tmp_path, tiny_bert, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fine-tune's folder goes to runs/ of the working folder
    res, out = _bench(capsys, tmp_path, tiny_bert, "--finetune", "auto", "--time-budget", "20")
    probe = res["finetune_probe"]
    tuned = [r for r in res["results"] if r.get("fine_tuned")]
    if probe["recommend"]:
        assert probe["auto"].startswith("full fine-tune") and len(tuned) == 1
        assert os.path.isfile(os.path.join(tuned[0]["model_dir"], "encoder", "config.json"))
    else:  # a random tiny BERT: no advice, and no fine-tune run
        assert probe["auto"] == "no full fine-tune: the probe does not recommend one" and not tuned
    assert "--finetune auto: " in (out / "results.md").read_text()


def test_a_finetune_that_beats_the_frozen_best_is_saved_as_best_model(tmp_path, tiny_bert, monkeypatch):
    # The tiny random BERT's [CLS] vector carries next to nothing: a logistic regression on it is at chance,
    # and a short full fine-tune (mean pooling) beats it on its own held-out rows.
    monkeypatch.chdir(tmp_path)  # the fine-tune's folder goes to runs/ of the working folder
    out = tmp_path / "bench"
    proc = run_main("bench", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--model", tiny_bert, "--cache-dir",
                    tmp_path / "cache", "--out", out, "--no-tune", "--cv", "2", "--heads", "logreg", "--features",
                    "cls", "--finetune", "full", "--finetune-epochs", "3", "--max-length", "24", "--json", "--quiet",
                    check=0)
    res = json.loads(proc.stdout)
    tuned = next(r for r in res["results"] if r.get("fine_tuned"))
    # chosen on the same rows: the fine-tune's validation split, where the frozen best's out-of-fold score is
    assert tuned["cv_score"] > tuned["frozen_val_score"]
    assert res["best"]["head"] == "full-ft" and res["best"]["model_dir"] == tuned["model_dir"]
    best = out / "best-model"
    assert sorted(os.listdir(best)) == ["encoder", "head.npz", "manifest.json", "run.json"]
    # predict with the saved folder gives the bench's test figures: the same labels
    preds = json.loads(run_main("predict", "--model-dir", best, "--data", DEMO_TEST, "--json", "--quiet",
                                check=0).stdout)
    assert np.mean([p["label"] == p["true_label"] for p in preds]) == res["best"]["accuracy"]
    tuned_preds = json.loads(run_main("predict", "--model-dir", tuned["model_dir"], "--data", DEMO_TEST, "--json",
                                      "--quiet", check=0).stdout)
    assert [p["label"] for p in preds] == [p["label"] for p in tuned_preds]


def test_only_a_full_finetune_ahead_on_its_own_rows_is_chosen():
    from bertfeat.finetuning import TunedRow, chosen

    def row(head, val, frozen):
        return TunedRow({"head": head, "cv_score": val, "n_val": 30}, {}, (None, None), frozen)

    assert chosen([row("full-ft", 0.80, 0.80)]) is None  # a tie keeps the frozen best
    assert chosen([row("setfit", 0.99, None)]) is None  # setfit's head saw its validation rows
    ahead = row("full-ft", 0.81, 0.80)
    assert chosen([row("setfit", 0.99, None), ahead]) is ahead


def test_time_budget_too_small_for_one_epoch_runs_no_finetune(tmp_path):
    from bertfeat import options
    from bertfeat.probe import auto_methods

    config = options.BenchConfig(finetune="auto", time_budget=1.0)
    probe = {"recommend": True, "epochs": 5, "epoch_seconds": 150.0}
    assert auto_methods(dict(probe), config)[0] == []
    methods, tuned = auto_methods(dict(probe), options.replace(config, time_budget=6.0))
    assert methods == ["full"] and tuned.epochs == 2  # two 2.5-min epochs fit in 6 minutes, three do not


def test_probe_skipped_when_its_budget_cannot_hold_it(capsys, tmp_path, tiny_bert):
    res, _ = _bench(capsys, tmp_path, tiny_bert, "--probe-seconds", "0.001")
    probe = res["finetune_probe"]
    assert "its budget of 0.0 s is under the 2 s" in probe["skipped"] and probe["recommend"] is False
    assert probe["seconds"] == 0.0  # stopped before loading anything


def test_the_advised_command_is_one_finetune_accepts(tmp_path):
    import shlex

    from bertfeat import options
    from bertfeat.cli import build_parser
    from bertfeat.probe import _command, advice

    train = str(tmp_path / "my data" / "train.csv")
    config = options.BenchConfig(model="/models/tiny bert", epochs=2)
    probe = {"recommend": True, "gain": 0.052, "estimated_full_seconds": 600.0}
    line = advice(probe, _command(config, train, "test.csv"))
    assert line.startswith("fine-tuning is likely +5.2 points on this data (≈ 10 min here): `")
    args = build_parser().parse_args(shlex.split(line.split("`")[1])[1:])
    assert (args.command, args.train, args.test, args.model, args.epochs, args.method) == \
        ("finetune", train, "test.csv", "/models/tiny bert", 2, "full")
