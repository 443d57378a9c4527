"""The docs run as written: every ```bash / ```sh / ```python block of README.md and docs/ runs here, and the
outputs the docs show are what those commands print. The CLI reference lists every flag --help shows.

Blocks that cannot run in the suite (a server, a Ray cluster, a GPU, pip, make) are fenced ```console or
```text. README's ```python blocks run in tests/test_readme.py (with its model folder); its shell blocks here.
"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "docs"))
import hooks  # noqa: E402  (docs/hooks.py: what the MkDocs build generates)

RUNNABLE = {"bash", "sh", "python"}
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", flags=re.S | re.M)
PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))


def _blocks(path):
    with open(path, encoding="utf-8") as fh:
        return [(lang, body) for lang, body in FENCE.findall(fh.read())]


def _commands(body):
    """Shell lines of a block, backslash continuations joined, comments and blank lines dropped."""
    lines = body.replace("\\\n", " ").split("\n")
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _comparable(line):
    """A shown output line as the test compares it: None for lines with timings or elisions, and for the
    encoder's start-up lines (printed only when the model loads: the suite's cache is warm, a reader's first
    run is not); a table row without its last three columns (fit s, ms/1k: timings)."""
    line = line.strip()
    if (not line or "..." in line or re.search(r"\d s\b|\d s,|s/text|text/s", line)
            or line.startswith(("encoder ", "exporting "))):
        return None
    tokens = line.split()
    if len(tokens) >= 10 and all(re.fullmatch(r"[\d.]+", t) for t in tokens[-3:-1]):
        tokens = tokens[:-3]
    return " ".join(tokens)


@pytest.fixture
def docs_folder(tmp_path, demo_cache, monkeypatch):
    """A folder with data/demo/ and a copy of the session's filled demo cache as the default cache."""
    shutil.copytree(os.path.join(ROOT, "data", "demo"), tmp_path / "data" / "demo")
    shutil.copytree(demo_cache, tmp_path / "cache")
    monkeypatch.setenv("BERTFEAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_page(path, folder, capsys, python=True):
    from bertfeat.cli import main

    namespace = {"__name__": "__docs__"}
    blocks = _blocks(path)
    ran = 0
    for i, (lang, body) in enumerate(blocks):
        if lang not in RUNNABLE or (lang == "python" and not python):
            continue
        ran += 1
        if lang == "python":
            exec(compile(body, path, "exec"), namespace)
            continue
        capsys.readouterr()
        for line in _commands(body):
            assert line.startswith("bertfeat "), (
                f"{path}: shell line {line!r} is not a bertfeat command: fence it ```console if it cannot run here")
            code = main(shlex.split(line, comments=True)[1:])
            assert code == 0, f"{path}: {line} exited {code}"
        printed = capsys.readouterr()
        real = {_comparable(x) for x in (printed.out + printed.err).replace(f"{folder}/", "")
                .replace(str(folder / "cache"), "~/.cache/bertfeat").split("\n")}
        if i + 1 < len(blocks) and blocks[i + 1][0] == "text":
            shown = [c for c in map(_comparable, blocks[i + 1][1].split("\n")) if c]
            missing = [c for c in shown if c not in real]
            printed = sorted(r for r in real if r)
            assert not missing, (f"{path}: shown after {body.strip()!r} but not printed by it: {missing}; "
                                 f"printed: {printed}")
    return ran


@pytest.mark.parametrize("page", [p for p in PAGES if any(lang in RUNNABLE for lang, _ in _blocks(p))],
                         ids=lambda p: os.path.relpath(p, os.path.join(ROOT, "docs")))
def test_docs_page_blocks_run_and_show_real_output(page, docs_folder, capsys):
    assert _run_page(page, docs_folder, capsys) > 0


def test_readme_shell_blocks_run(docs_folder, capsys):
    assert _run_page(os.path.join(ROOT, "README.md"), docs_folder, capsys, python=False) > 0


def test_every_docs_block_says_its_language():
    """An unmarked fence would be skipped silently; blocks that do not run say so with console or text."""
    known = RUNNABLE | {"console", "text", "json", "yaml", "toml"}
    bad = [(os.path.relpath(p, ROOT), lang) for p in PAGES for lang, _ in _blocks(p) if lang not in known]
    assert not bad


def test_readme_is_short():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    assert len(text.splitlines()) <= 150
    assert text.startswith("# bertfeat\n\n```\nmake demo    #")


def test_cli_reference_lists_every_flag_help_shows():
    from bertfeat.cli import build_parser

    page = hooks.cli_page()
    parser = build_parser()
    commands = re.findall(r"^    (\w+)  ", parser.format_help(), flags=re.M)
    assert {"embed", "fit", "bench", "finetune", "predict", "cache", "serve", "labels"} <= set(commands)
    for command in commands:
        help_text = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), command, "--help"],
                                   capture_output=True, text=True, check=True).stdout
        section = page.split(f"\n## {command}\n")[1].split("\n## ")[0]
        option_lines = re.findall(r"^  (-.*?)(?:  |$)", help_text, flags=re.M)
        flags = {f for line in option_lines for f in re.findall(r"--[a-z][a-z0-9-]*", line)} - {"--help"}
        assert len(flags) >= 2, help_text
        missing = sorted(f for f in flags if f"`{f}`" not in section)
        assert not missing, f"bertfeat {command} --help shows {missing}, the CLI reference does not"


def test_reliability_rows_link_to_tests_that_exist():
    with open(os.path.join(ROOT, "docs", "reliability.md"), encoding="utf-8") as fh:
        rows = [r for r in fh.read().split("\n") if r.startswith("| ") and not r.startswith("| case")]
    assert len(rows) > 50
    tests = hooks.test_functions()
    unknown = []
    for row in rows:
        for target in re.findall(r"reference/tests\.md#([\w-]+)", hooks.link_tests(row)):
            stem, _, name = target.partition("--")
            if stem not in tests or (name and name not in {t for t, _ in tests[stem]}):
                unknown.append(target)
    assert not unknown, f"reliability rows name tests that do not exist: {unknown}"


def test_mkdocs_build_strict(tmp_path):
    mkdocs = os.path.join(os.path.dirname(sys.executable), "mkdocs")
    proc = subprocess.run([mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.path.isfile(tmp_path / "site" / "reference" / "cli" / "index.html")
