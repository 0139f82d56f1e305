"""Token batches for training and evaluation: grain pipelines over tokenized text documents.

A batch is {"inputs", "targets", "segment_ids", "positions"}, each int32 [batch_size, seq_len].
A document d becomes inputs [eos] + d and targets d + [eos] (EOS doubles as BOS). Padding has
segment id 0, token 0 and position 0; tokens with segment id > 0 are real. With segment_ids=True
documents are cut into seq_len pieces and packed whole, segment ids 1, 2, ... per row, positions
restarting at 0 per piece; with False the token stream is concatenated and split, segment id 1.
"""

import json
from collections.abc import Callable, Iterator
from typing import Any

import grain
import numpy as np
from etils import epath

from meshlm.training import sources
from meshlm.training.data_config import DataConfig
from meshlm.training.errors import DataError
from meshlm.training.tokenizer import SENTENCEPIECE_FILE, Tokenizer, find_in

Batch = dict[str, np.ndarray]
Row = dict[str, np.ndarray]
# Batches are made in the caller's thread, overlapping device work through JAX's async dispatch;
# reader threads only fought over the GIL (measured slower on 2 cores).
_READ = grain.ReadOptions(num_threads=0)


class _Pieces(grain.experimental.FlatMapTransform):
    """Cut a tokenized document into seq_len pieces, so that every piece fits in one packed row."""

    def __init__(self, seq_len: int):
        self._seq_len = seq_len

    def flat_map(self, doc: Row) -> list[Row]:
        starts = range(0, len(doc["inputs"]), self._seq_len)
        return [{k: v[s : s + self._seq_len] for k, v in doc.items()} for s in starts]


def _tokenize(tokenizer: Tokenizer) -> Callable[[str], Row]:
    eos = np.array([tokenizer.eos_id], np.int32)

    def tokenize(text: str) -> Row:
        ids = np.array(tokenizer.encode(text), np.int32)
        return {"inputs": np.concatenate([eos, ids]), "targets": np.concatenate([ids, eos])}

    return tokenize


def _packed_row(row: Row) -> Row:
    return {
        "inputs": row["inputs"],
        "targets": row["targets"],
        "segment_ids": row["inputs_segment_ids"],
        "positions": row["inputs_positions"],
    }


def _concatenated_row(row: Row) -> Row:
    # Rows of one stream: attention may look back across document boundaries, marked only by EOS.
    real = (row["inputs_segment_ids"] > 0).astype(np.int32)
    positions = np.arange(len(real), dtype=np.int32) * real
    return {"inputs": row["inputs"], "targets": row["targets"], "segment_ids": real, "positions": positions}


def _rows(
    docs: grain.MapDataset, tokenizer: Tokenizer, cfg: DataConfig, seq_len: int, bins: int, seed: int | None
) -> grain.IterDataset:
    """Rows of seq_len tokens from text documents (shuffled within windows unless seed is None)."""
    shuffle = seed is not None and cfg.shuffle_window > 1
    lengths = {"inputs": seq_len, "targets": seq_len}
    ds = docs.filter(lambda text: bool(text.strip())).map(_tokenize(tokenizer)).to_iter_dataset(_READ)
    if cfg.segment_ids:
        ds = grain.experimental.FlatMapIterDataset(ds, _Pieces(seq_len))
        if shuffle:
            ds = grain.experimental.WindowShuffleIterDataset(ds, window_size=cfg.shuffle_window, seed=seed)
        ds = grain.experimental.FirstFitPackIterDataset(
            ds, length_struct=lengths, num_packing_bins=bins, seed=seed or 0, shuffle_bins=shuffle
        )
        return ds.map(_packed_row)
    ds = grain.experimental.ConcatThenSplitIterDataset(ds, length_struct=lengths)
    if shuffle:
        ds = grain.experimental.WindowShuffleIterDataset(ds, window_size=cfg.shuffle_window, seed=seed)
    return ds.map(_concatenated_row)


def _json_state(state: Any) -> Any:
    """Grain state as JSON gives it back: ConcatThenSplit's (start, stop) slices become lists."""
    return json.loads(json.dumps(state))


def _grain_state(state: Any) -> Any:
    """Undo the one JSON change grain trips on: it compares remainder slices with a tuple."""
    if not isinstance(state, dict):
        return state
    return {
        k: {f: tuple(s) for f, s in v.items()} if k == "remainder_slices" else _grain_state(v) for k, v in state.items()
    }


class TrainIterator(Iterator[Batch]):
    """Training batches forever; get_state() is a JSON-safe dict that set_state() resumes from exactly."""

    def __init__(self, ds: grain.IterDataset, identity: dict[str, Any]):
        self._it = iter(ds)
        self._identity = identity

    def __next__(self) -> Batch:
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        return {**self._identity, "grain": _json_state(self._it.get_state())}

    def set_state(self, state: dict[str, Any]) -> None:
        changed = sorted(k for k, v in self._identity.items() if state.get(k) != v)
        if changed:
            saved = {k: state.get(k) for k in changed}
            now = {k: self._identity[k] for k in changed}
            raise DataError(f"data state was saved with {saved} but this run has {now}; resume with the same settings")
        self._it.set_state(_grain_state(state["grain"]))


class Pipeline:
    """The tokenizer plus training and validation batches for one process."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        splits: dict[str, grain.MapDataset],
        cfg: DataConfig,
        seq_len: int,
        batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        self.tokenizer = tokenizer
        self.splits = splits
        self.cfg = cfg
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self._val_cache: dict[int, list[Batch]] = {}

    def train_iterator(self) -> TrainIterator:
        """Batches of documents[process_index::process_count], reshuffled by seed every epoch.

        Each process shuffles and packs only its own documents: the union over processes of a
        step's batches is a function of (seed, step, process_count), not of the process batch alone.
        """
        shard = grain.sharding.ShardOptions(self.process_index, self.process_count)
        docs = self.splits["train"][shard.shard_index :: shard.shard_count]
        if len(docs) == 0:
            raise DataError(
                f"process {self.process_index} of {self.process_count} got no training documents; "
                "use fewer processes or more data"
            )
        ds = _rows(
            docs.shuffle(self.seed).repeat(),
            tokenizer=self.tokenizer,
            cfg=self.cfg,
            seq_len=self.seq_len,
            bins=self.batch_size,
            seed=self.seed,
        )
        identity = {
            "source": self.cfg.source,
            "segment_ids": self.cfg.segment_ids,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "process_index": self.process_index,
            "process_count": self.process_count,
        }
        return TrainIterator(ds.batch(self.batch_size, drop_remainder=True), identity)

    def val_batches(self, max_batches: int) -> list[Batch]:
        """Up to max_batches validation batches, the same on every call.

        Every process builds the same global batches of batch_size * process_count rows and keeps
        its own rows, so all processes get the same number of batches; the last is padded.
        """
        if max_batches not in self._val_cache:
            rows = self.batch_size * self.process_count
            val_rows = _rows(
                self.splits["validation"],
                tokenizer=self.tokenizer,
                cfg=self.cfg,
                seq_len=self.seq_len,
                bins=rows,
                seed=None,
            )
            global_batches = val_rows.batch(rows)
            own = slice(self.process_index * self.batch_size, (self.process_index + 1) * self.batch_size)
            batches = []
            for _, batch in zip(range(max_batches), global_batches):
                padding = ((0, rows - len(batch["inputs"])), (0, 0))
                batches.append({k: np.pad(v, padding)[own] for k, v in batch.items()})
            self._val_cache[max_batches] = batches
        return self._val_cache[max_batches]


def _tokenizer(cfg: DataConfig, run_dir: epath.Path, train_docs: grain.MapDataset) -> Tokenizer:
    """The run's tokenizer: the one saved in run_dir, else cfg.tokenizer (copied in), else one trained on train_docs."""
    saved = find_in(run_dir)
    if saved is not None:
        return Tokenizer.load(saved)
    if cfg.tokenizer:
        tokenizer = Tokenizer.load(cfg.tokenizer)
        tokenizer.save_in(run_dir)
        return tokenizer
    # The whole split in stored order, so that every process trains the same tokenizer.
    texts = (train_docs[i] for i in range(len(train_docs)))
    return Tokenizer.train(texts, cfg.vocab_size, run_dir / SENTENCEPIECE_FILE, max_chars=cfg.tokenizer_train_chars)


def build_pipeline(
    cfg: DataConfig,
    run_dir: epath.PathLike,
    seq_len: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Pipeline:
    """Open cfg.source, get the tokenizer into run_dir (tokenizer.model or tokenizer.json), return the pipeline."""
    splits = sources.open_splits(cfg)
    tokenizer = _tokenizer(cfg, epath.Path(run_dir), splits["train"])
    return Pipeline(
        tokenizer,
        splits,
        cfg=cfg,
        seq_len=seq_len,
        batch_size=batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
