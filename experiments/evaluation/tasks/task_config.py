"""`task:PATH.yaml`: a file task with its prompt set per task. The YAML names the data and any part of the prompt:

    kind: jsonl                # jsonl | lambada | bigbench | a standard task (hellaswag, arc_easy, ...)
    path: questions.jsonl      # relative to the YAML; a standard task also takes `tfds`
    shots_path: train.jsonl    # standard tasks: the file shots are drawn from (default: the evaluated file)
    name: my_questions         # the name results use, which also seeds the shots (default: the YAML's stem)
    description: Answer each question.
    target_delimiter: " "      # between a context and its answer
    fewshot_delimiter: "\\n\\n"  # between shots (and after the description)
    uncond_context: "Answer:"  # the context of acc_uncond; "" = not computed
    mutual_info: true          # acc_mutual_info: each choice also scored after the empty context
    choice_format: "{choice}"  # each choice as written and scored: {choice}, {letter} (A, B, ...), {number} (1, ...)

Unset keys keep the kind's own prompt.
"""

import dataclasses
import pathlib
import string
from collections.abc import Callable

import yaml

from meshlm.experiments.evaluation.prompts import Item
from meshlm.experiments.evaluation.tasks.base import Task
from meshlm.model.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    kind: str
    path: str
    shots_path: str | None = None
    name: str | None = None
    description: str | None = None
    target_delimiter: str | None = None
    fewshot_delimiter: str | None = None
    uncond_context: str | None = None
    mutual_info: bool | None = None
    choice_format: str | None = None


CHOICE_FIELDS = ("choice", "letter", "number")
PROMPT_FIELDS = ("description", "target_delimiter", "fewshot_delimiter")


def read(path: pathlib.Path) -> TaskConfig:
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass task:PATH with the path of a task YAML")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a task YAML is a mapping with at least `kind` and `path`")
    fields = {f.name: f for f in dataclasses.fields(TaskConfig)}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{path}: unknown key {key!r}; a task YAML takes {', '.join(fields)}")
        want = bool if key == "mutual_info" else str
        if not isinstance(value, want):
            raise ConfigError(f"{path}: {key} must be a {want.__name__}, got {type(value).__name__} {value!r:.40}")
    missing = [k for k in ("kind", "path") if k not in raw]
    if missing:
        raise ConfigError(f"{path}: {' and '.join(missing)} missing; e.g. `kind: jsonl` and `path: questions.jsonl`")
    return TaskConfig(**raw)


def _formatted_choices(template: str, item: Item) -> Item:
    if not item.choices or item.partial:
        return item
    choices = tuple(
        template.format(choice=c, letter=string.ascii_uppercase[i], number=i + 1) for i, c in enumerate(item.choices)
    )
    return dataclasses.replace(item, choices=choices)


def _check_choice_format(where: pathlib.Path, template: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise ConfigError(f"{where}: choice_format {template!r} is not a format string ({e})") from None
    unknown = [n for n in names if n not in CHOICE_FIELDS]
    if unknown or not names:
        raise ConfigError(
            f"{where}: choice_format {template!r} must use {{choice}}, {{letter}} or {{number}}"
            + (f", not {{{unknown[0]}}}" if unknown else "")
        )


def load(path: str | pathlib.Path, resolve: Callable[[str], Task | str]) -> Task:
    """The task `kind` reads from `path`, with the YAML's prompt settings applied."""
    path = pathlib.Path(path)
    cfg = read(path)

    def local(p: str) -> str:
        return p if p == "tfds" else str((path.parent / p).resolve())

    source = local(cfg.path) + (f":{local(cfg.shots_path)}" if cfg.shots_path else "")
    task = resolve(f"{cfg.kind}:{source}")
    if not isinstance(task, Task):
        raise ConfigError(f"{path}: kind {cfg.kind!r} is a probe, not a file task; use jsonl, lambada or bigbench")
    prompt = {k: getattr(cfg, k) for k in PROMPT_FIELDS if getattr(cfg, k) is not None}
    changes = {"name": cfg.name or path.stem, "fmt": dataclasses.replace(task.fmt, **prompt)}
    if cfg.uncond_context is not None or cfg.mutual_info is not None:
        if task.kind != "multiple_choice" or any(it.partial for it in task.items):
            raise ConfigError(
                f"{path}: uncond_context and mutual_info apply to multiple-choice tasks whose choices are answers; "
                f"{cfg.kind} is not one: remove them"
            )
        if cfg.uncond_context is not None:
            changes["uncond_context"] = cfg.uncond_context
        if cfg.mutual_info is not None:
            changes["mutual_info"] = cfg.mutual_info
    if cfg.choice_format is not None:
        if task.kind != "multiple_choice":
            raise ConfigError(f"{path}: choice_format applies to multiple-choice tasks; {cfg.kind} is not one")
        _check_choice_format(path, cfg.choice_format)
        changes["items"] = tuple(_formatted_choices(cfg.choice_format, it) for it in task.items)
        changes["pool"] = tuple(_formatted_choices(cfg.choice_format, it) for it in task.pool)
    return dataclasses.replace(task, **changes)
