"""Whole-file writes that a reader (or a run killed half-way) never sees half of: write a temporary file next to
the target, then rename it over the target. A failed write removes its temporary file and leaves the old one."""

import os
import uuid

from etils import epath


def write_atomic(path: epath.PathLike, data: str | bytes) -> None:
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if "://" not in str(path):  # local files reach the disk before the rename makes them visible
                f.flush()
                os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
