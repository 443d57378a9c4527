"""The README's Python examples run as written."""
import os
import re

import numpy as np

from conftest import ROOT


def test_readme_python_blocks_run(tmp_path, monkeypatch, demo_vectors, demo_cache):
    from bertfeat.model_folder import model_manifest
    from bertfeat.classify import make_head, save_model_dir
    from bertfeat.extract import BertEncoder

    # The model folder the examples load ("runs/demo-logreg"): logreg on the demo data's vectors.
    X_train, y_train, _, _ = demo_vectors
    head = make_head("logreg").fit(X_train, np.asarray(y_train))
    model = save_model_dir(str(tmp_path / "demo-logreg"), head,
                           model_manifest([BertEncoder()], "logreg", "mean", head.classes_), {})
    text = open(os.path.join(ROOT, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README should show the library in Python"
    import shutil

    shutil.copytree(demo_cache, tmp_path / "cache")
    monkeypatch.setenv("BERTFEAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        code = block.replace("/tmp/vectors", str(tmp_path / "vectors")).replace("runs/demo-logreg", model)
        code = code.replace('"data/demo/', f'"{ROOT}/data/demo/')
        exec(compile(code, "README.md", "exec"), {})
    assert os.listdir(tmp_path / "vectors")
    assert sorted(os.listdir(tmp_path / "vectors" / "copy-of-demo")) == ["head.npz", "manifest.json", "run.json"]
    assert os.path.isfile(tmp_path / "runs" / "quickstart" / "best-model" / "manifest.json")  # the quick start ran
