"""The suite's XLA settings (tests/conftest.py sets them before jax is imported), and the environment for a process
a test starts."""

import os

# Quick compiles: the suite's programs are small and run once or twice, so compiling them is most of its time.
# LLVM at -O0 for XLA's generated CPU kernels takes a third off it; XLA:CPU's older loop emitters for fusions
# (instead of its MLIR fusion emitters) a third of what is left. Dots still run in YNNPACK; results agree to float
# rounding, and every comparison in the suite is between programs compiled alike or against a tolerance.
QUICK_COMPILES = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"

# The same two settings at XLA's defaults, as compiler options of one program: for the few tests whose claim holds
# for the programs users compile but not for quick compiles (bitwise equality of two different programs, a
# tolerance set by optimised rounding), and for programs that run long enough to be worth optimising.
USERS_COMPILER_OPTIONS = {"xla_backend_optimization_level": 3, "xla_cpu_use_fusion_emitters": True}


def child_env(*drop: str) -> dict[str, str]:
    """This environment for a process that picks its own CPU device count (--cpu-devices, or one device): XLA_FLAGS
    without the suite's count, its quick compiles kept, and without the variables in `drop`."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "force_host_platform_device_count" not in f)
    return env
