"""The fine-tune probe (bertfeat/probe.py): bench says whether fine-tuning the encoder would gain, and
``--finetune auto`` acts on it. On the demo data with the tiny random BERT, so each bench takes seconds."""
import json
import os

from conftest import DEMO_TEST, DEMO_TRAIN, data_rows

from bertfeat.cli import main

FAST = ["--no-tune", "--cv", "2", "--heads", "logreg", "--quiet", "--probe-seconds", "60", "--finetune-probe"]


def _bench(capsys, tmp_path, tiny_bert, *extra, train=DEMO_TRAIN):
    out = tmp_path / "out"
    code = main(["bench", "--train", train, "--test", DEMO_TEST, "--model", tiny_bert, "--cache-dir",
                 str(tmp_path / "cache"), "--out", str(out), "--json", *FAST, *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out), out


def test_bench_reports_the_probe_in_json_md_and_html(capsys, tmp_path, tiny_bert):
    res, out = _bench(capsys, tmp_path, tiny_bert)
    probe = res["finetune_probe"]
    assert not probe.get("skipped"), probe
    # the demo's 320 training rows: half fine-tuned on, half scored; the test set is never touched
    assert probe["n_probe_train"] + probe["n_probe_val"] == 320
    assert 0 <= probe["probe_frozen"] <= 1 and 0 <= probe["probe_finetuned"] <= 1
    # against the frozen best's out-of-fold predictions on the same rows, not the 160-row logistic regression
    assert abs(probe["gain"] - (probe["probe_finetuned"] - probe["frozen_best_val"])) < 1e-3
    assert isinstance(probe["recommend"], bool) and probe["noise"] > 0
    assert probe["estimated_full_seconds"] > 0 and 0 < probe["seconds"] <= probe["budget_seconds"]
    assert probe["frozen_score"] == round(res["best"]["cv_score"], 4)
    saved = json.loads((out / "results.json").read_text())
    assert saved["context"]["finetune_probe"]["gain"] == probe["gain"]
    assert probe["advice"] in (out / "results.md").read_text()
    assert "fine-tune probe" in (out / "results.html").read_text()


def test_the_probe_is_deterministic(demo, tiny_bert):
    import numpy as np

    from bertfeat import options
    from bertfeat.probe import run_probe

    train = demo[0]
    X = np.random.default_rng(0).normal(size=(len(train.texts), 8))  # the frozen side's vectors: any will do
    config = options.BenchConfig(model=tiny_bert, probe_seconds=60.0, progress=False)
    first, second = (run_probe(config, train, X, 0.5, 1.0) for _ in range(2))
    keys = ("probe_frozen", "frozen_best_val", "probe_finetuned", "gain", "noise", "recommend")
    assert not first.get("skipped") and [first[k] for k in keys] == [second[k] for k in keys]


def test_probe_skipped_with_its_reason_on_tiny_data(capsys, tmp_path, tiny_bert):
    small = data_rows(DEMO_TRAIN, tmp_path / "small.csv", 0, 80)
    res, out = _bench(capsys, tmp_path, tiny_bert, train=small)
    probe = res["finetune_probe"]
    assert probe["recommend"] is False and "80 training rows, fewer than 100" in probe["skipped"]
    assert "fine-tune probe: skipped (80 training rows" in (out / "results.md").read_text()


def test_without_finetune_probe_there_is_none(capsys, tmp_path, tiny_bert):
    out = tmp_path / "out"
    assert main(["bench", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--model", tiny_bert, "--cache-dir",
                 str(tmp_path / "cache"), "--out", str(out), "--json", *FAST[:-1]]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["finetune_probe"] is None
    assert "fine-tune probe" not in (out / "results.md").read_text()


def test_finetune_auto_follows_the_probe(capsys, tmp_path, tiny_bert):
    res, out = _bench(capsys, tmp_path, tiny_bert, "--finetune", "auto", "--time-budget", "20")
    probe = res["finetune_probe"]
    tuned = [r for r in res["results"] if r.get("fine_tuned")]
    if probe["recommend"]:
        assert probe["auto"].startswith("full fine-tune") and len(tuned) == 1
        assert os.path.isfile(os.path.join(tuned[0]["model_dir"], "encoder", "config.json"))
    else:  # a random tiny BERT: no advice, and no fine-tune run
        assert probe["auto"] == "no full fine-tune: the probe does not recommend one" and not tuned
    assert "--finetune auto: " in (out / "results.md").read_text()


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
    assert "over its budget of 0 s (probe_seconds)" in probe["skipped"] and probe["recommend"] is False
    assert probe["seconds"] < 30  # stopped before its fine-tune


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
