"""Rows of a benchmark with its upstream field names: a file as the HF `datasets` export writes it (JSON lines or
Parquet), or a split of the TFDS catalog."""

import json
import pathlib

from meshlm.model.errors import ConfigError

SUFFIXES = (".jsonl", ".json", ".parquet")


def read_file(path: str | pathlib.Path) -> list[dict]:
    """Every row of a `.jsonl`/`.json` (one object per line, `Dataset.to_json`) or `.parquet` file."""
    path = pathlib.Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"{path}: expected a JSON lines or Parquet file ({', '.join(SUFFIXES)})")
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass NAME:PATH with a file exported by HF datasets")
    if path.suffix == ".parquet":
        import pyarrow.parquet  # deferred: only Parquet files need it (installed with tensorflow-datasets' deps)

        rows = pyarrow.parquet.read_table(path).to_pylist()
    else:
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg}); write one JSON object per line") from None
    if not rows:
        raise ConfigError(f"{path} holds no rows")
    return rows


def read_tfds(name: str, split: str, data_dir: str | None = None) -> list[dict]:
    """A prepared TFDS split as plain rows (bytes decoded). Never downloads: evaluation must not depend on the
    network, so an unprepared dataset is an error that says how to prepare it."""
    import tensorflow_datasets as tfds  # deferred: only NAME:tfds needs it

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001  (TFDS raises several types for unknown names and configs)
        first_line = str(e).splitlines()[0] if str(e) else ""  # the rest lists the whole catalog
        raise ConfigError(f"TFDS has no dataset {name!r} ({type(e).__name__}: {first_line})") from None
    if not builder.is_prepared():
        raise ConfigError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}; run `tfds build {name}` where there is "
            "network (or copy its directory here), or pass NAME:PATH with a local file"
        )
    if split not in builder.info.splits:
        raise ConfigError(f"TFDS dataset {name!r} has splits {sorted(builder.info.splits)}, not {split!r}")
    return [_plain(row) for row in builder.as_data_source(split=split)]


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
