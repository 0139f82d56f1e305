"""The local TFDS builder writes array_record without TensorFlow, reads back exactly and builds once."""

import pathlib
import sys

import pytest

from meshlm.training import text_dataset


@pytest.fixture
def splits(tmp_path):
    files = []
    for i in range(3):
        path = tmp_path / f"file{i}.txt"
        path.write_text(f"file document {i}\nsecond line ☃\n", encoding="utf-8")
        files.append(path)
    return {"train": ["inline document", "", "ünïcode 中文 🙂", *files[:2]], "validation": [files[2]]}


def _texts(builder, split):
    source = builder.as_data_source(split)
    return [source[i]["text"].decode("utf-8") for i in range(len(source))]


def _expected(docs):
    return [d if isinstance(d, str) else d.read_text(encoding="utf-8") for d in docs]


def test_roundtrip_in_order_without_tensorflow(tmp_path, splits):
    builder = text_dataset.build_local_text(splits, tmp_path / "cache")
    assert builder.info.file_format.value == "array_record"
    assert list(builder.data_path.glob("*.array_record-*"))
    for split, docs in splits.items():
        assert _texts(builder, split) == _expected(docs)
    assert "tensorflow" not in sys.modules


def test_second_build_reuses_the_files(tmp_path, splits, monkeypatch):
    first = text_dataset.build_local_text(splits, tmp_path / "cache")
    records = {p: p.stat().st_mtime_ns for p in pathlib.Path(first.data_dir).iterdir()}

    def never(self, docs):
        raise AssertionError("rebuilt a cached dataset")

    monkeypatch.setattr(text_dataset.LocalText, "_generate_examples", never)
    second = text_dataset.build_local_text(splits, tmp_path / "cache")
    assert second.data_path == first.data_path
    assert {p: p.stat().st_mtime_ns for p in pathlib.Path(second.data_dir).iterdir()} == records
    assert _texts(second, "train") == _expected(splits["train"])


def test_changed_inputs_build_a_new_dataset(tmp_path, splits):
    first = text_dataset.build_local_text(splits, tmp_path / "cache")
    splits["validation"][0].write_text("edited and longer than before")
    second = text_dataset.build_local_text(splits, tmp_path / "cache")
    assert second.data_path != first.data_path
    assert _texts(second, "validation") == ["edited and longer than before"]
    assert text_dataset.fingerprint({"train": ["a", "bc"]}) != text_dataset.fingerprint({"train": ["ab", "c"]})
