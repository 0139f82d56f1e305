"""A small local corpus and tiny sweep specs: runs of a few dozen steps on a 16-wide, one-layer model."""

import random

import yaml


def text_corpus(root) -> str:
    rng = random.Random(0)
    words = "the king queen lord lady sword crown night day love death fair foul heart blood".split()
    for i in range(40):
        lines = [" ".join(rng.choices(words, k=rng.randint(4, 12))) + "." for _ in range(150)]
        (root / f"play{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return f"text:{root}/*.txt"


def write_spec(path, corpus: str, cache, **fields) -> str:
    spec = {
        "name": "test",
        "preset": "tiny",
        "data": {"source": corpus, "vocab_size": 300, "cache_dir": str(cache)},
        "seq_len": 32,
        "head_dim": 8,
        "budgets": [1.6e8],
        "shapes": [{"d_model": 16, "n_layers": 1}],
        "rules": {"batch": {"target_steps": 20, "min_tokens": 128, "max_tokens": 128}},
        "eval": {"sequences": 8, "per_run": 2},
        "checkpoints_per_run": 2,
        **fields,
    }
    path.write_text(yaml.safe_dump(spec))
    return str(path)
