"""The suite's XLA settings (tests/conftest.py sets them before jax is imported)."""

# Quick compiles: the suite's programs are small and run once or twice, so compiling them is most of its time.
# LLVM at -O0 for XLA's generated CPU kernels takes a third off it; XLA:CPU's older loop emitters for fusions
# (instead of its MLIR fusion emitters) a third of what is left. Dots still run in YNNPACK; results agree to float
# rounding, and every comparison in the suite is between programs compiled alike or against a tolerance.
QUICK_COMPILES = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"

# The same two settings at XLA's defaults, as compiler options of one program: for the few tests whose claim holds
# for the programs users compile but not for quick compiles (bitwise equality of two different programs, a
# tolerance set by optimised rounding), and for programs that run long enough to be worth optimising.
USERS_COMPILER_OPTIONS = {"xla_backend_optimization_level": 3, "xla_cpu_use_fusion_emitters": True}
