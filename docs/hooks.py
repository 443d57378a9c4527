"""MkDocs hook: the pages that must not drift are generated at build time.

- ``reference/cli.md`` from ``bertfeat.cli.build_parser()``: every subcommand, every flag, its default;
- ``benchmarks.md``: BENCHMARKS.md as it is;
- ``reference/tests.md`` from ``tests/test_*.py``: every test function, with an anchor the reliability
  table links to;
- in ``reliability.md``, a row's ``(test_file: `test_name`)`` becomes links to those anchors, so a row
  naming a test that does not exist is a broken anchor, which fails ``mkdocs build --strict``.

``tests/test_docs.py`` imports ``cli_page`` to check the page against each ``--help``.
"""
import argparse
import ast
import functools
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flag_row(action) -> str:
    names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        value = "{" + ",".join(map(str, action.choices)) + "}"
    elif action.nargs == 0:
        value = ""
    else:
        value = action.metavar or action.dest.upper()
    default = action.default
    shown = "" if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else f"`{default}`"
    text = (action.help or "").replace("%(default)s", str(default)).replace("|", "\\|")
    if action.required:
        text = "**required.** " + text
    return f"| {names} | {value} | {shown} | {text} |"


def cli_page() -> str:
    sys.path.insert(0, ROOT)
    from bertfeat.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = ["# Command line", "",
           "Generated from `bertfeat.cli.build_parser()` when the docs are built, so it lists exactly what "
           "`bertfeat <command> --help` shows. `python cli.py` in a checkout and `python -m bertfeat` are the "
           "same command line.", "",
           "Every command prints results to stdout and logs to stderr. Exit codes: `0` done, `1` "
           "`cache verify` found damage, `2` a user mistake (one line `error: ...`, see "
           "[Errors and exit codes](errors.md)).", ""]
    for name, p in sub.choices.items():
        out += [f"## {name}", "", p.description or "", "", "```text", p.format_usage().strip(), "```", ""]
        for group in p._action_groups:
            rows = [_flag_row(a) for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
            if not rows:
                continue
            out += [f"**{group.title}**", "", "| flag | value | default | meaning |", "|---|---|---|---|",
                    *rows, ""]
        if p.epilog:
            out += ["Examples:", "", "```text", p.epilog.strip("\n"), "```", ""]
    return "\n".join(out)


@functools.cache
def test_functions() -> dict[str, list[tuple[str, str]]]:
    """{file stem: [(test name, first docstring line)]} for tests/test_*.py, in file order."""
    found = {}
    folder = os.path.join(ROOT, "tests")
    for fname in sorted(os.listdir(folder)):
        if not (fname.startswith("test_") and fname.endswith(".py")):
            continue
        with open(os.path.join(folder, fname), encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        nodes = [n for top in tree.body for n in ([top] + (top.body if isinstance(top, ast.ClassDef) else []))]
        found[fname[:-3]] = [(n.name, (ast.get_docstring(n) or "").split("\n")[0])
                             for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                             and n.name.startswith("test_")]
    return found


def tests_page() -> str:
    out = ["# Tests", "", "Generated from `tests/test_*.py` when the docs are built: every test function, "
           "under its file. The [reliability table](../reliability.md) links here. Run one with "
           "`.venv/bin/python -m pytest -q tests/FILE.py -k NAME`.", ""]
    for stem, tests in test_functions().items():
        out += [f'## {stem}.py {{#{stem}}}', ""]
        out += [f'- <span id="{stem}--{name}"></span>`{name}`' + (f": {doc}" if doc else "") for name, doc in tests]
        out.append("")
    return "\n".join(out)


_REF = re.compile(r"\(([^()]*\btest_[a-z0-9_]+[^()]*)\)")


def link_tests(cell: str) -> str:
    """`(test_x: `test_a`, `test_b`; test_y)` -> the same text with each file and test linked."""
    def one(match):
        known = test_functions()
        parts, current = [], None
        for token in re.split(r"(`[^`]+`|test_[a-z0-9_]+)", match.group(1)):
            if token.startswith("`test_") and current:
                name = token.strip("`")
                parts.append(f"[`{name}`](reference/tests.md#{current}--{name})")
            elif token in known:
                current = token
                parts.append(f"[{token}](reference/tests.md#{token})")
            else:
                parts.append(token)
        return "(" + "".join(parts) + ")"
    return _REF.sub(one, cell)


def on_files(files, config):
    from mkdocs.structure.files import File

    with open(os.path.join(ROOT, "BENCHMARKS.md"), encoding="utf-8") as fh:
        benchmarks = fh.read()  # one source: the repository's BENCHMARKS.md is the docs' page
    for path, content in (("reference/cli.md", cli_page()), ("reference/tests.md", tests_page()),
                          ("benchmarks.md", benchmarks)):
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "reliability.md":
        return "\n".join(link_tests(line) if line.startswith("|") else line for line in markdown.split("\n"))
    return markdown
