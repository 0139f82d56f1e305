"""W&B's offline run files, read back. The installed wandb has no reader of its own (its Python DataStore left with
the Python backend), so this follows the LevelDB log format wandb-core writes: a 7-byte file header (':W&B', magic
0xBEE1, version 0), then 32 KiB blocks of chunks, each a 7-byte header (CRC-32 of type and data, length, type) and
its data; a record longer than its block's room is split FIRST, MIDDLE..., LAST. Each record is a protobuf Record."""

import dataclasses
import json
import pathlib
import struct
import zlib

import wandb
from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
FULL, LAST = 1, 4


@dataclasses.dataclass
class OfflineRun:
    folder: pathlib.Path
    run_id: str
    project: str
    group: str
    name: str
    job_type: str
    config: dict  # what the run was given, without W&B's own `_wandb` entry
    history: dict[int, dict]  # step -> the values logged at it (W&B's own `_...` keys left out)
    summary: dict


def records(path: pathlib.Path):
    data = path.read_bytes()
    assert FILE_HEADER.unpack_from(data) == (b":W&B", 0xBEE1, 0)
    pos, pieces = FILE_HEADER.size, b""
    while pos + CHUNK_HEADER.size <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER.size:  # a block's tail too short for a header is padding
            pos += room
            continue
        crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        body = data[pos + CHUNK_HEADER.size : pos + CHUNK_HEADER.size + length]
        assert zlib.crc32(body, zlib.crc32(bytes([kind]))) == crc, f"damaged chunk at byte {pos} of {path}"
        pos += CHUNK_HEADER.size + length
        pieces += body
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def _name(item) -> str:
    return item.key or ".".join(item.nested_key)


def read(folder: pathlib.Path) -> OfflineRun:
    """The run written into one offline-run-* folder."""
    (path,) = folder.glob("run-*.wandb")
    run, config, history, summary = None, {}, {}, {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({_name(u): json.loads(u.value_json) for u in run.config.update})
        elif kind == "config":
            config.update({_name(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            values = {_name(i): json.loads(i.value_json) for i in record.history.item}
            history.setdefault(record.history.step.num, {}).update(values)
        elif kind == "summary":
            summary.update({_name(u): json.loads(u.value_json) for u in record.summary.update})
    config.pop("_wandb", None)
    assert run is not None, f"{path} holds no run record ({path.stat().st_size} bytes)"
    return OfflineRun(
        folder=folder,
        run_id=run.run_id,
        project=run.project,
        group=run.run_group,
        name=run.display_name,
        job_type=run.job_type,
        config=config,
        history={s: {k: v for k, v in row.items() if not k.startswith("_")} for s, row in history.items()},
        summary={k: v for k, v in summary.items() if not k.startswith("_")},
    )


def read_all(wandb_dir: pathlib.Path) -> list[OfflineRun]:
    """Every run in a W&B directory, oldest first (a resumed run starts a new folder with the same id)."""
    # A finished run's records may still sit in wandb-core's write buffer (seen under load); teardown waits them out.
    wandb.teardown()
    return [read(folder) for folder in sorted(wandb_dir.glob("offline-run-*"))]


def offline(monkeypatch, home) -> None:
    """W&B writes its files and nothing else, all under `home`, and asks for no account."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(home))
    for name in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(name, raising=False)
