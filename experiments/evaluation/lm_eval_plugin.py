"""Registers the `meshlm` model type with lm-evaluation-harness, so its own command line accepts
`lm_eval --model meshlm --model_args run_dir=DIR`. Run at interpreter start by meshlm-lm-eval.pth (installed
with meshlm): it imports nothing but the standard library and waits for lm-eval to load `lm_eval.models`."""

import importlib.abc
import importlib.machinery
import sys

MODELS = "lm_eval.models"
TARGET = "meshlm.experiments.evaluation.lm_eval_adapter:MeshLM"


class _RegisterAfterModels(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when lm_eval.models is imported, its loader gets a step that runs after it."""

    def find_spec(self, name, path=None, target=None):
        if name != MODELS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            register()

        spec.loader.exec_module = exec_module
        return spec


def register() -> None:
    """`meshlm` in lm-eval's model registry as a lazy placeholder: the adapter (and torch) load on first use."""
    from lm_eval.api.registry import model_registry

    if "meshlm" not in model_registry:
        model_registry.register("meshlm", target=TARGET)


def install() -> None:
    if MODELS in sys.modules:
        register()
    elif not any(isinstance(f, _RegisterAfterModels) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterModels())
