"""Model folders that are unsafe or damaged: a folder that asks to run its own code
(``auto_map``, a model type transformers does not ship) is refused in one line before anything loads, even
when the user would answer "y" to transformers' prompt; a damaged config, tokenizer or weights file, or a
pickle torch refuses, is one ``error: model folder DIR: FILE ...`` line instead of a traceback. Real CLI
processes where a prompt could be answered or an export runs; damaged files for embed, and the fine-tune the
predict test starts from, in-process (run_main)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import DEMO_TEST, DEMO_TRAIN, ROOT, run_main

FAST = {"OMP_NUM_THREADS": "1", "BERTFEAT_CPU_BF16": "0"}  # fp32 torch, as in test_finetune


def _cli(*args, cache):
    """``python cli.py ARGS`` answering "y" to any question, as a user at a terminal might."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BERTFEAT_CACHE": str(cache), **FAST}
    return subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *map(str, args), "--quiet"], cwd=ROOT,
                          check=False, env=env, input="y\n" * 5, capture_output=True, text=True, timeout=600)


def _in_process(*args, cache):
    """_cli in this process (run_main). Nothing can answer a prompt here: the real processes of
    test_embed_refuses_a_folder_that_asks_to_run_its_own_code show that a "y" changes nothing."""
    return run_main(*args, "--quiet", cache=cache, env=FAST)


def _assert_refused(proc, folder, *words):
    """Exit 2 with one `error: model folder FOLDER: ...` line naming ``words``, and no traceback or prompt."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nstderr:\n{proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: model folder {folder}: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert "[y/N]" not in proc.stdout + proc.stderr


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _edit_json(path, **changes):
    with open(path) as fh:
        data = json.load(fh)
    data.update(changes)
    with open(path, "w") as fh:
        json.dump(data, fh)


def _plant_code(folder, marker):
    """A module that leaves ``marker`` behind when imported, with the classes an auto_map could name."""
    with open(os.path.join(folder, "evil.py"), "w") as fh:
        fh.write(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                 "from transformers import BertConfig, BertModel, BertTokenizerFast\n"
                 "class EvilConfig(BertConfig):\n    model_type = 'evil'\n"
                 "class EvilModel(BertModel):\n    config_class = EvilConfig\n"
                 "class EvilTokenizer(BertTokenizerFast):\n    pass\n")


# What each planted folder changes, and a word its refusal must name. (transformers 5 ignores a tokenizer's
# auto_map beside a BERT config; the folder still asks for its code to run, and is refused all the same.)
REMOTE_CODE = {
    "config auto_map": ("config.json", {"auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"},
                                        "model_type": "evil"}, "auto_map"),
    "tokenizer auto_map": ("tokenizer_config.json", {"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}},
                           "auto_map"),
    "unknown model_type": ("config.json", {"model_type": "evil"}, "'evil'"),
}


@pytest.mark.parametrize("case", sorted(REMOTE_CODE))
def test_embed_refuses_a_folder_that_asks_to_run_its_own_code(tmp_path, tiny_bert, case):
    name, changes, word = REMOTE_CODE[case]
    folder = _copy(tiny_bert, tmp_path / "model")
    _edit_json(os.path.join(folder, name), **changes)
    _plant_code(folder, tmp_path / "ran")
    proc = _cli("embed", "--model", folder, "--data", DEMO_TEST, cache=tmp_path / "cache")
    assert not (tmp_path / "ran").exists()
    _assert_refused(proc, folder, name, word)
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")  # refused before any work


@pytest.mark.parametrize("command", ["fit", "bench", "finetune"])
def test_every_command_that_takes_a_model_folder_refuses_one_that_asks_to_run_code(tmp_path, tiny_bert, command):
    folder = _copy(tiny_bert, tmp_path / "model")
    _edit_json(os.path.join(folder, "config.json"), **REMOTE_CODE["config auto_map"][1])
    _plant_code(folder, tmp_path / "ran")
    out = tmp_path / "out"
    proc = _in_process(command, "--model", folder, "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--out", out,
                       cache=tmp_path / "cache")
    assert not (tmp_path / "ran").exists()
    _assert_refused(proc, folder, "config.json", "auto_map")
    assert not out.exists()


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_bert):
    """A model folder written by `finetune` on tiny_bert (one short epoch)."""
    out = tmp_path_factory.mktemp("finetuned") / "run"
    proc = _in_process("finetune", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--model", tiny_bert, "--epochs", "1",
                       "--max-length", "24", "--out", out, cache=tmp_path_factory.mktemp("cache"))
    assert proc.returncode == 0, proc.stderr
    return out


def test_predict_refuses_a_finetuned_folder_whose_encoder_asks_to_run_code(tmp_path, finetuned):
    # An attacker rewrites the manifest too: its model_id is recomputed over the planted encoder, so the
    # only thing wrong with the folder is the code it asks to run.
    from bertfeat.extract.model import model_id

    folder = _copy(finetuned, tmp_path / "model")
    encoder = os.path.join(folder, "encoder")
    _edit_json(os.path.join(encoder, "config.json"), model_type="evil",
               auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    _plant_code(encoder, tmp_path / "ran")
    _edit_json(os.path.join(folder, "manifest.json"), model_id=model_id(encoder))
    proc = _cli("predict", "--model-dir", folder, "--data", DEMO_TEST, cache=tmp_path / "cache")
    assert not (tmp_path / "ran").exists()
    _assert_refused(proc, encoder, "config.json", "auto_map")


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def _pickled_weights(folder, marker):
    """Only a pytorch_model.bin whose pickle would run a shell command when loaded without weights_only."""
    import torch

    class Planted:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    os.remove(os.path.join(folder, "model.safetensors"))
    torch.save({"embeddings.word_embeddings.weight": Planted()}, os.path.join(folder, "pytorch_model.bin"))


def _truncated_bin(folder, marker):
    import torch
    from safetensors.torch import load_file

    weights = os.path.join(folder, "model.safetensors")
    torch.save(load_file(weights), os.path.join(folder, "pytorch_model.bin"))
    os.remove(weights)
    _truncate(os.path.join(folder, "pytorch_model.bin"))


# How each folder is damaged, and the file its error must name.
DAMAGE = {
    "tokenizer.json truncated": (lambda f, m: _truncate(os.path.join(f, "tokenizer.json")), "tokenizer.json"),
    "tokenizer.json of another shape": (lambda f, m: _write(os.path.join(f, "tokenizer.json"), '{"model": 3}'),
                                        "tokenizer.json"),
    "config.json not JSON": (lambda f, m: _write(os.path.join(f, "config.json"), "{not json"), "config.json"),
    "config.json a list": (lambda f, m: _write(os.path.join(f, "config.json"), "[1, 2]"), "config.json"),
    "tokenizer_config.json a string": (lambda f, m: _write(os.path.join(f, "tokenizer_config.json"), '"x"'),
                                       "tokenizer_config.json"),
    "model.safetensors truncated": (lambda f, m: _truncate(os.path.join(f, "model.safetensors")),
                                    "model.safetensors"),
    "pytorch_model.bin truncated": (_truncated_bin, "pytorch_model.bin"),
    "pytorch_model.bin holding code": (_pickled_weights, "pytorch_model.bin"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_embed_on_a_damaged_model_folder_is_one_line(tmp_path, tiny_bert, case):
    damage, name = DAMAGE[case]
    folder = _copy(tiny_bert, tmp_path / "model")
    damage(folder, tmp_path / "ran")
    proc = _in_process("embed", "--model", folder, "--data", DEMO_TEST, "--cache-dir", tmp_path / "cache",
                       cache=tmp_path / "cache")
    assert not (tmp_path / "ran").exists()
    _assert_refused(proc, folder, name)


@pytest.mark.parametrize("case", ["pytorch_model.bin holding code", "tokenizer.json truncated"])
def test_the_onnx_export_refuses_a_damaged_folder_in_one_line_too(tmp_path, tiny_bert, case):
    # int8 runs from an ONNX export of the folder, which loads it in extract/onnx_backend.py.
    damage, name = DAMAGE[case]
    folder = _copy(tiny_bert, tmp_path / "model")
    damage(folder, tmp_path / "ran")
    proc = _in_process("embed", "--model", folder, "--data", DEMO_TEST, "--precision", "int8", cache=tmp_path / "cache")
    assert not (tmp_path / "ran").exists()
    _assert_refused(proc, folder, name)
