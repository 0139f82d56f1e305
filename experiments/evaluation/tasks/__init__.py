"""Task names and specs -> tasks: built-in generators, probes, files (jsonl:PATH, lambada:PATH, bigbench:PATH),
standard benchmarks by lm-eval's names (hellaswag:PATH, arc_easy:tfds, ...), and any file task with its prompt set
in a YAML (task:PATH.yaml)."""

from meshlm.experiments.evaluation.tasks import (
    arithmetic,
    files,
    label_mapping,
    probes,
    scramble,
    standard,
    task_config,
)
from meshlm.experiments.evaluation.tasks.base import Task
from meshlm.model.errors import ConfigError

GROUPS = {"arithmetic": arithmetic.NAMES, "unscramble": scramble.NAMES, "icl": probes.NAMES + (label_mapping.NAME,)}
BUILT_IN = arithmetic.NAMES + scramble.NAMES + (label_mapping.NAME,) + probes.NAMES
FILE_KINDS = {"jsonl": files.load_jsonl, "lambada": files.load_lambada, "bigbench": files.load_bigbench}


def names() -> list[str]:
    return (
        list(BUILT_IN)
        + list(GROUPS)
        + [f"{k}:PATH" for k in FILE_KINDS]
        + [f"{k}:PATH|tfds" for k in standard.SPECS]
        + ["task:PATH.yaml"]
    )


def expand(specs: list[str]) -> list[str]:
    """Comma-separated specs with groups expanded, in order, without repeats."""
    out: list[str] = []
    for spec in (s.strip() for item in specs for s in item.split(",")):
        if spec:
            out += [s for s in GROUPS.get(spec, (spec,)) if s not in out]
    return out


def resolve(spec: str, seed: int = 0) -> Task | str:
    """A prompt Task, or the name of a probe (probes run on the model directly)."""
    kind, sep, path = spec.partition(":")
    if sep and kind == "task":
        return task_config.load(path, lambda inner: resolve(inner, seed))
    if sep and kind in FILE_KINDS:
        return FILE_KINDS[kind](path)
    if sep and kind in standard.SPECS:
        return standard.build(kind, path)
    if spec in probes.NAMES:
        return spec
    if spec in arithmetic.NAMES:
        return arithmetic.build(spec, seed)
    if spec in scramble.NAMES:
        return scramble.build(spec, seed)
    if spec == label_mapping.NAME:
        return label_mapping.build(seed)
    raise ConfigError(f"unknown task {spec!r}; use one of: {', '.join(names())}")


__all__ = ["Task", "expand", "names", "resolve"]
