"""ehft_plugin: Efficient Head Finetuning and layer-stratified PEFT for fairseq RoBERTa.

`register()` registers the plugin's task, model, criterion, optimizer and BPE with fairseq
and installs its changes to fairseq (all listed in fairseq_compat/compat.py): checkpoints
load safely under torch >= 2.6, torchrun forms one world (distributed.py) whose ranks check
at every validation that they hold the same parameters (replicas.py).

Importing the package never imports fairseq (seconds) but registers the plugin with it: at
once when fairseq is already imported (fairseq's --user-dir, a checkpoint naming the plugin's
directory), or else the moment fairseq finishes importing (`import ehft_plugin` at the top of
a script). So the `ehft` command pays for fairseq only in the subcommands that need it, which
call `register()` themselves, and `ehft --help`, `ehft report` or a refused argument answer
without it.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import warnings

__version__ = "0.1.0"

# fairseq announces at import that an unrelated speech task lacks tensorboardX
logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)

_registered = False


def register():
    """Register the plugin with fairseq and install its changes (once; later calls return)."""
    global _registered
    if _registered:
        return
    from .fairseq_compat import compat

    compat.install()  # every change to fairseq, each checked against the installed version
    from . import criterions, models, optim, tasks  # noqa: F401  (registration)
    from .data import backbone_bpe  # noqa: F401  (bpe: ehft_backbone, for fairseq's hub)

    _registered = True


# Modules that moved when the package was laid out by pipeline stage (after 0.1.0): the old
# names import the same module objects, with a FutureWarning, until the next release.
MOVED = {name: "fairseq_compat." + name for name in (
    "compat", "safe_loading", "distributed", "replicas", "preflight", "kernels", "host_syncs",
    "step_launches")}
MOVED.update({name: "train." + name for name in (
    "launcher", "methods", "recipes", "handover", "pretrained", "locks", "provenance", "stage1",
    "epochs", "sweep", "tracking", "progress", "rebuild", "rundir")})
MOVED.update({name: "interop." + name for name in (
    "convert", "hf_export", "hf_modeling_ehft", "predict", "submit")})
MOVED.update({"report": "evaluate.report", "analyze": "evaluate.analyze",
              "child_tuning": "peft.child_tuning", "checkpoints": "peft.checkpoints",
              "drift": "models.drift"})


class _MovedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`ehft_plugin.OLD[.sub]` -> `ehft_plugin.NEW[.sub]`. A moved module is the same module
    object under both names; a moved package is a stand-in that reads its names from the
    package (importing a submodule under an old name sets the submodule on its parent, which
    must not replace a name the real package binds, e.g. report's `collect` function)."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, rest = fullname.partition(".")
        if head != __name__ or not rest:
            return None
        moved = next((old for old in MOVED if rest == old or rest.startswith(old + ".")), None)
        if moved is None:
            return None
        new = "%s.%s%s" % (__name__, MOVED[moved], rest[len(moved):])
        spec = importlib.util.spec_from_loader(fullname, self, origin=new)
        spec.loader_state = {}
        return spec

    def create_module(self, spec):
        module = importlib.import_module(spec.origin)
        if hasattr(module, "__path__"):  # a package
            stand_in = type(module)(spec.name, module.__doc__)
            stand_in.__getattr__ = lambda name: getattr(module, name)
            stand_in.__path__ = module.__path__
            return stand_in
        spec.loader_state["own spec"] = module.__spec__
        return module

    def exec_module(self, module):
        alias = module.__spec__  # set by the import system: a module gets its own back
        if "own spec" in alias.loader_state:
            module.__spec__ = alias.loader_state["own spec"]
        warnings.warn("%s moved to %s; the old name goes in the next release"
                      % (alias.name, alias.origin), FutureWarning, stacklevel=2)


sys.meta_path.insert(0, _MovedModule())  # before the path finder, which would find
# an old package's submodules again under the old name through the new package's __path__


class _RegisterWithFairseq(importlib.abc.MetaPathFinder):
    """Calls `register()` once fairseq is imported and no module of the plugin is half
    imported: right after fairseq's own import, or, when one of the plugin's modules imported
    it, once that module (and any plugin import around it) has finished, since registering
    imports modules that may need its names. Sees only the imports of fairseq and of the
    plugin's modules, and only until it has registered."""

    def __init__(self):
        self.depth, self.pending = 0, False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "fairseq" and not fullname.startswith(__name__ + "."):
            return None
        spec = self._spec(fullname, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec  # e.g. an old module name (_MovedModule), which imports the new one
        run = spec.loader.exec_module

        def exec_module(module):
            self.depth += 1
            try:
                run(module)
            finally:
                self.depth -= 1
            self.pending = self.pending or fullname == "fairseq"
            if self.pending and self.depth == 0 and self in sys.meta_path:
                sys.meta_path.remove(self)
                register()

        spec.loader.exec_module = exec_module
        return spec

    def _spec(self, fullname, path, target):  # what the finders after this one find
        for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


if "fairseq" in sys.modules:
    register()
else:
    sys.meta_path.insert(1, _RegisterWithFairseq())  # after _MovedModule
