"""The build's one custom step (the rest is declared in setup.cfg): put `meshlm-lm-eval.pth` at the root of
site-packages, so that lm-evaluation-harness's own `lm_eval --model meshlm` finds meshlm's model type. lm-eval
0.4 reads model types from its registry alone and discovers no plugins; the .pth registers `meshlm` there, lazily,
when lm-eval loads its models (experiments/evaluation/lm_eval_plugin.py)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "meshlm-lm-eval.pth"
# A .pth line that starts with "import" is executed at interpreter start.
PTH_LINE = "import meshlm.experiments.evaluation.lm_eval_plugin as plugin; plugin.install()\n"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        # An editable build discards build_lib and ships the install folder (the unpacked wheel) instead.
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        Path(root, PTH).write_text(PTH_LINE)

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


setup(cmdclass={"build_py": BuildPyWithPth})
