"""The import tree resolves on disk, as editors and type checkers read it: every ``bertfeat.X.Y`` imported
anywhere in the checkout is a file under ``bertfeat/`` (``bertfeat/extract`` and friends are links to the
root folders the project keeps), and nothing else imports as ``bertfeat.*``."""
import ast
import os

from conftest import ROOT

SOURCES = ("bertfeat", "extract", "cache", "classify", "tests", "benchmarks", "cli.py")


def _python_files():
    for top in SOURCES:
        path = os.path.join(ROOT, top)
        if path.endswith(".py"):
            yield path
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not os.path.islink(os.path.join(folder, d))]
            yield from (os.path.join(folder, f) for f in files if f.endswith(".py"))


def _imported(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _on_disk(module: str) -> bool:
    path = os.path.join(ROOT, *module.split("."))
    return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__init__.py"))


def test_every_bertfeat_import_resolves_to_a_file_in_the_checkout():
    unresolved = set()
    for path in _python_files():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        for module in _imported(tree):
            if not module.startswith("bertfeat"):
                continue
            parent = module.rsplit(".", 1)[0]
            # `from bertfeat.x import name`: the name is a module or an attribute of module bertfeat.x
            if not _on_disk(module) and not _on_disk(parent):
                unresolved.add((os.path.relpath(path, ROOT), module))
    assert not unresolved, sorted(unresolved)[:10]


def test_only_the_package_imports_as_bertfeat():
    import importlib.util

    for name in ("bertfeat.tests", "bertfeat.runs", "bertfeat.benchmarks", "bertfeat.data"):
        assert importlib.util.find_spec(name) is None, name
    for name in ("bertfeat.extract", "bertfeat.cache", "bertfeat.classify"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and os.path.realpath(spec.origin).startswith(os.path.realpath(ROOT))
