"""The package's layout is the pipeline's: each stage a package, and no import runs back up
the pipeline or reaches into another module's private names. Old module paths still import,
as the same modules, with a warning."""

import ast
import importlib
import warnings

import pytest
from conftest import REPO

PACKAGE = REPO / "ehft_plugin"
# bottom to top: a module may import its own layer and the layers below it
LAYERS = [
    {"errors", "atomic", "metrics"},
    {"fairseq_compat"},
    {"data"},
    {"models", "peft"},  # PEFT wraps the model's modules (prefix-tuning extends its attention)
    {"tasks", "criterions", "optim"},
    {"train"},
    {"evaluate"},
    {"interop"},
    {"cli", "__init__"},  # entry points
]
RANK = {part: rank for rank, layer in enumerate(LAYERS) for part in layer}


def _part(module):
    """The top-level part of ehft_plugin a dotted module name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _imports(path):
    """(line, imported module, names) of every import in a file, lazy ones too."""
    name, is_package = _module_name(path)
    package = name if is_package else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                full = module + "." + alias.name
                if (REPO / (full.replace(".", "/") + ".py")).exists() or (
                        REPO / full.replace(".", "/")).is_dir():
                    yield node.lineno, full, []
                else:
                    yield node.lineno, module, [alias.name]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_belongs_to_a_layer():
    assert {_part(_module_name(p)[0]) for p in MODULES} <= set(RANK)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_back_up_the_pipeline_or_into_private_names(path):
    importer = _module_name(path)[0]
    wrong = []
    for line, module, names in _imports(path):
        if not module.startswith("ehft_plugin."):  # (the package itself: its version, and
            continue                                   # registration with fairseq)
        if RANK[_part(module)] > RANK[_part(importer)]:
            wrong.append("line %d imports %s (a later stage)" % (line, module))
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private and module != importer:
            wrong.append("line %d imports %s from %s" % (line, ", ".join(private), module))
    assert not wrong, wrong


@pytest.mark.parametrize("old,new", [
    ("ehft_plugin.predict", "ehft_plugin.interop.predict"),
    ("ehft_plugin.checkpoints", "ehft_plugin.peft.checkpoints"),
    ("ehft_plugin.report.collect", "ehft_plugin.evaluate.report.collect"),
    ("ehft_plugin.launcher", "ehft_plugin.train.launcher"),
])
def test_an_old_module_path_imports_the_moved_module_with_a_warning(old, new):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        moved = importlib.import_module(old)
    assert moved is importlib.import_module(new)
    assert moved.__spec__.name == new  # the module keeps its own identity
    assert any("%s moved to %s" % (old, new) in str(w.message) and
               issubclass(w.category, FutureWarning) for w in caught)


def test_an_old_package_path_reads_the_moved_package_and_leaves_its_names_alone():
    from ehft_plugin.evaluate import report
    from ehft_plugin.train.rundir import Run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ehft_plugin.rundir import Run as old_run
        importlib.import_module("ehft_plugin.report.collect")
    assert old_run is Run
    assert callable(report.collect)  # the package's function, not the submodule of that name


LONG = 300  # lines: a module longer than this says why at its top


@pytest.mark.parametrize("path", MODULES + sorted((REPO / "benchmarks").glob("*.py")),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_a_long_module_says_why_at_its_top(path):
    text = path.read_text()
    if text.count("\n") > LONG:
        docstring = ast.get_docstring(ast.parse(text)) or ""
        assert "Longer than" in docstring, "%s: %d lines and no reason in its docstring" % (
            path.relative_to(REPO), text.count("\n"))
