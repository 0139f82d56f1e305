"""Batches from build_pipeline: format, packing invariants, determinism, exact resume and process sharding."""

import dataclasses
import json
import random

import numpy as np
import pytest

from meshlm.training import data, sources
from meshlm.training.data_config import DataConfig
from meshlm.training.errors import DataError

VOCAB = 320
WINDOW = 64  # small shuffle windows keep the tests fast and make them cross window boundaries
BATCH = 4
SHORT_SEQ = 128  # every short document (at most 100 characters) fits one row


def _words(rng: random.Random, n: int) -> str:
    syllables = ["ka", "lo", "mi", "tu", "re", "sa", "no", "vi", "de", "po"]
    return " ".join("".join(rng.choices(syllables, k=rng.randint(1, 2))) for _ in range(n))


@pytest.fixture(scope="module")
def short_docs(tmp_path_factory):
    """A text: corpus of 60 distinct documents shorter than SHORT_SEQ tokens."""
    root = tmp_path_factory.mktemp("short")
    rng = random.Random(0)
    for i in range(60):
        (root / f"doc{i:02d}.txt").write_text(f"{_words(rng, rng.randint(3, 18))}\n")
    return DataConfig(
        source=f"text:{root}/*.txt", vocab_size=VOCAB, cache_dir=str(root / "cache"), shuffle_window=WINDOW
    )


@pytest.fixture(scope="module")
def long_docs(tmp_path_factory):
    """A text: corpus whose documents span many rows of 32 tokens."""
    root = tmp_path_factory.mktemp("long")
    rng = random.Random(1)
    for i in range(24):
        (root / f"doc{i:02d}.txt").write_text("\n".join(_words(rng, 10) for _ in range(rng.randint(1, 12))))
    return DataConfig(
        source=f"text:{root}/*.txt", vocab_size=VOCAB, cache_dir=str(root / "cache"), shuffle_window=WINDOW
    )


def _pipeline(cfg, tmp_path, seq_len=SHORT_SEQ, seed=0, **kw):
    return data.build_pipeline(cfg, tmp_path / "run", seq_len=seq_len, batch_size=BATCH, seed=seed, **kw)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _equal(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


def _segments(batch):
    """(inputs, targets) of every segment in the batch, in row order."""
    out = []
    for inputs, targets, seg in zip(batch["inputs"], batch["targets"], batch["segment_ids"]):
        for s in np.unique(seg[seg > 0]):
            out.append((inputs[seg == s], targets[seg == s]))
    return out


def _check_packed_rows(batch):
    for key in ("inputs", "targets", "segment_ids", "positions"):
        assert batch[key].dtype == np.int32
    for inputs, targets, seg, pos in zip(batch["inputs"], batch["targets"], batch["segment_ids"], batch["positions"]):
        real = seg > 0
        assert real[0] and np.all(np.diff(real.astype(int)) <= 0)  # padding only at the end
        assert np.all(inputs[~real] == 0) and np.all(targets[~real] == 0) and np.all(pos[~real] == 0)
        ids = seg[real]
        assert ids[0] == 1 and np.all(np.diff(ids) >= 0) and np.all(np.diff(ids) <= 1)  # 1, 2, 3.. contiguous
        starts = np.concatenate([[True], np.diff(ids) == 1])
        expected = np.arange(len(ids)) - np.maximum.accumulate(np.where(starts, np.arange(len(ids)), 0))
        assert np.array_equal(pos[real], expected)  # positions restart at each segment
        same = (seg[:-1] == seg[1:]) & real[1:]
        assert np.array_equal(targets[:-1][same], inputs[1:][same])  # next-token targets, never across segments


def test_batch_format_and_packing(short_docs, tmp_path):
    pipeline = _pipeline(short_docs, tmp_path)
    eos = pipeline.tokenizer.eos_id
    for batch in _take(pipeline.train_iterator(), 10):
        assert set(batch) == {"inputs", "targets", "segment_ids", "positions"}
        assert all(v.shape == (BATCH, SHORT_SEQ) for v in batch.values())
        _check_packed_rows(batch)
        assert batch["segment_ids"].max() > 1  # short documents share rows
        for inputs, targets in _segments(batch):  # short documents are whole segments: EOS d | d EOS
            assert inputs[0] == eos and targets[-1] == eos
            assert eos not in inputs[1:] and eos not in targets[:-1]


def test_long_documents_are_cut_into_rows(long_docs, tmp_path):
    pipeline = _pipeline(long_docs, tmp_path, seq_len=32)
    batches = _take(pipeline.train_iterator(), 20)
    for batch in batches:
        _check_packed_rows(batch)
    assert any(np.all(b["segment_ids"] == 1, axis=1).any() for b in batches)  # full-row pieces exist
    # Validation is every token once: nothing dropped, nothing repeated, pieces in document order.
    tokenizer = pipeline.tokenizer
    val_docs = [pipeline.splits["validation"][i] for i in range(len(pipeline.splits["validation"]))]
    val = pipeline.val_batches(1000)
    real = sum(int((b["segment_ids"] > 0).sum()) for b in val)
    assert real == sum(len(tokenizer.encode(d)) + 1 for d in val_docs)
    pieces = [tokenizer.decode(i) for b in val for i, _ in _segments(b)]
    assert sorted("".join(pieces)) == sorted("".join(val_docs))


def test_pieces_transform_splits_at_seq_len():
    doc = {"inputs": np.arange(70, dtype=np.int32), "targets": np.arange(1, 71, dtype=np.int32)}
    pieces = data._Pieces(32).flat_map(doc)
    assert [len(p["inputs"]) for p in pieces] == [32, 32, 6]
    assert np.array_equal(np.concatenate([p["targets"] for p in pieces]), doc["targets"])


def test_concatenated_rows(short_docs, tmp_path):
    cfg = dataclasses.replace(short_docs, segment_ids=False)
    pipeline = _pipeline(cfg, tmp_path, seq_len=64)
    for batch in _take(pipeline.train_iterator(), 10):
        assert all(v.shape == (BATCH, 64) and v.dtype == np.int32 for v in batch.values())
        assert np.all(batch["segment_ids"] == 1)
        assert np.all(batch["positions"] == np.arange(64))
        assert np.array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])  # one stream
        assert (batch["inputs"] == pipeline.tokenizer.eos_id).sum() > BATCH  # several documents per row


def test_deterministic_by_seed(short_docs, tmp_path):
    a = _take(_pipeline(short_docs, tmp_path, seed=3).train_iterator(), 5)
    b = _take(_pipeline(short_docs, tmp_path, seed=3).train_iterator(), 5)
    c = _take(_pipeline(short_docs, tmp_path, seed=4).train_iterator(), 5)
    assert _equal(a, b)
    assert not _equal(a, c)


@pytest.mark.parametrize("segment_ids", [True, False])
@pytest.mark.parametrize("skip", [0, 5, 23])
def test_resume_exactly_after_json_roundtrip(long_docs, tmp_path, segment_ids, skip):
    cfg = dataclasses.replace(long_docs, segment_ids=segment_ids)
    iterator = _pipeline(cfg, tmp_path, seq_len=32).train_iterator()
    _take(iterator, skip)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = _take(iterator, 5)
    resumed = _pipeline(cfg, tmp_path, seq_len=32).train_iterator()
    resumed.set_state(state)
    assert _equal(_take(resumed, 5), expected)


def test_resume_refuses_other_settings(short_docs, tmp_path):
    state = _pipeline(short_docs, tmp_path).train_iterator().get_state()
    with pytest.raises(DataError, match="seq_len"):
        _pipeline(short_docs, tmp_path, seq_len=64).train_iterator().set_state(state)


def test_processes_read_disjoint_shards_covering_train(short_docs, tmp_path):
    train = _pipeline(short_docs, tmp_path).splits["train"]
    everything = {train[i] for i in range(len(train))}
    seen = []
    for process in range(2):
        pipeline = _pipeline(short_docs, tmp_path, process_index=process, process_count=2)
        batches = _take(pipeline.train_iterator(), 12)  # over two epochs of the shard
        seen.append({pipeline.tokenizer.decode(i[1:]) for b in batches for i, _ in _segments(b)})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == everything
    assert abs(len(seen[0]) - len(seen[1])) <= 1


def test_val_batches_are_fixed_and_split_across_processes(short_docs, tmp_path):
    single = data.build_pipeline(short_docs, tmp_path / "run", seq_len=SHORT_SEQ, batch_size=2 * BATCH, seed=0)
    whole = single.val_batches(10)
    assert whole and _equal(whole, single.val_batches(10))
    val = single.splits["validation"]
    first_doc = whole[0]["inputs"][0][whole[0]["segment_ids"][0] == 1][1:]
    assert single.tokenizer.decode(first_doc) == val[0]  # stored order, not shuffled
    parts = [
        _pipeline(short_docs, tmp_path, seed=p + 7, process_index=p, process_count=2).val_batches(10) for p in range(2)
    ]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for w, p0, p1 in zip(whole, *parts):
        assert all(np.array_equal(w[k], np.concatenate([p0[k], p1[k]])) for k in w)
        _check_packed_rows({k: v[w["segment_ids"][:, 0] > 0] for k, v in w.items()})


def test_tokenizer_is_trained_once_then_reused(short_docs, tmp_path):
    first = _pipeline(short_docs, tmp_path)
    model = tmp_path / "run" / "tokenizer.model"
    assert model.is_file() and first.tokenizer.vocab_size == VOCAB
    other_vocab = dataclasses.replace(short_docs, vocab_size=300)
    assert _pipeline(other_vocab, tmp_path).tokenizer.vocab_size == VOCAB  # the run's own tokenizer wins
    copied = data.build_pipeline(dataclasses.replace(other_vocab, tokenizer=str(model)), tmp_path / "run2", 64, 2, 0)
    assert (tmp_path / "run2" / "tokenizer.model").read_bytes() == model.read_bytes()
    assert copied.tokenizer.vocab_size == VOCAB


def test_source_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown data source"):
        sources.open_splits(DataConfig(source="nonsense", cache_dir=str(tmp_path)))
    with pytest.raises(DataError, match="not in the TFDS catalog"):
        sources.open_splits(DataConfig(source="tfds:no_such_dataset_xyz", cache_dir=str(tmp_path)))

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(sources.tfds, "data_source", offline)
    with pytest.raises(DataError, match="TFDS_DATA_DIR") as e:
        sources.open_splits(DataConfig(source="tfds:lm1b", cache_dir=str(tmp_path)))
    assert "\n" not in str(e.value) and "ConnectionError" in str(e.value)
