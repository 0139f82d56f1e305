"""Resolve DataConfig.source into random-access train and validation documents."""

import os
import pathlib

import grain
import tensorflow_datasets as tfds

from meshlm.training import corpus, text_dataset
from meshlm.training.data_config import DataConfig
from meshlm.training.errors import DataError

SPLITS = ("train", "validation")


def cache_dir(cfg: DataConfig) -> pathlib.Path:
    return pathlib.Path(cfg.cache_dir or os.environ.get("MESHLM_CACHE") or "~/.cache/meshlm").expanduser()


def _as_text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _catalog(name: str, cfg: DataConfig, cache: pathlib.Path) -> dict[str, grain.MapDataset]:
    data_dir = os.environ.get("TFDS_DATA_DIR") or str(cache / "tfds")
    splits = {"train": cfg.train_split, "validation": cfg.val_split}
    try:
        sources = tfds.data_source(
            name,
            split=list(splits.values()),
            data_dir=data_dir,
            builder_kwargs={"file_format": "array_record"},  # The random-access format; tfrecord is not.
        )
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"tfds:{name} is not in the TFDS catalog; see https://www.tensorflow.org/datasets/catalog"
        ) from None
    except Exception as e:  # Network, missing generation dependencies, wrong file format: one fix for all.
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise DataError(
            f"cannot open tfds:{name} in {data_dir} ({type(e).__name__}: {reason}); on a machine with internet run "
            f"tfds.builder('{name}', data_dir=DIR, file_format='array_record').download_and_prepare(), "
            "copy DIR here and set TFDS_DATA_DIR=DIR"
        ) from None
    out = {}
    for split, source in zip(splits, sources):
        if len(source) and cfg.text_key not in source[0]:
            raise DataError(
                f"tfds:{name} has no feature {cfg.text_key!r}; set data.text_key to one of {sorted(source[0])}"
            )
        out[split] = grain.MapDataset.source(source).map(lambda r: _as_text(r[cfg.text_key]))
    return out


def open_splits(cfg: DataConfig) -> dict[str, grain.MapDataset]:
    """{"train": docs, "validation": docs}: random-access datasets of document strings, in a fixed order."""
    cache = cache_dir(cfg)
    if cfg.source.startswith("tfds:"):
        return _catalog(cfg.source.removeprefix("tfds:"), cfg, cache)
    if cfg.source == "shakespeare":
        plays = corpus.shakespeare_splits(cache)
        files = {
            split: [p for path in paths for p in corpus.passages(path.read_text(encoding="utf-8"))]
            for split, paths in plays.items()
        }
    elif cfg.source.startswith("text:"):
        files = corpus.text_glob_splits(cfg.source.removeprefix("text:"))
    else:
        raise DataError(
            f"unknown data source {cfg.source!r}; use shakespeare, tfds:NAME[/CONFIG][:VERSION] or text:GLOB"
        )
    builder = text_dataset.build_local_text(files, cache / "local_text")
    return {
        split: grain.MapDataset.source(builder.as_data_source(split)).map(lambda r: _as_text(r["text"]))
        for split in SPLITS
    }
