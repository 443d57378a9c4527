"""The README's Python examples run as written."""
import os
import re

from conftest import ROOT


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    text = open(os.path.join(ROOT, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README should show the library in Python"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block.replace("/tmp/vectors", str(tmp_path / "vectors")), "README.md", "exec"), {})
    assert os.listdir(tmp_path / "vectors")
