"""A TFDS builder that stores local text documents as array_record, written and read without TensorFlow."""

import hashlib
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence

import tensorflow_datasets as tfds

# A str is the document itself; a Path is a UTF-8 file holding one document.
Document = str | pathlib.Path


def fingerprint(splits: Mapping[str, Sequence[Document]]) -> str:
    """A short hash of the inputs; files count by path, size and mtime so that cache hits never read them."""
    h = hashlib.sha256()
    for name in sorted(splits):
        h.update(f"split {name}\0".encode())
        for doc in splits[name]:
            if isinstance(doc, pathlib.Path):
                stat = doc.stat()
                h.update(f"file {doc.resolve()} {stat.st_size} {stat.st_mtime_ns}\0".encode())
            else:
                h.update(f"text {len(doc)}\0".encode() + doc.encode())
    return h.hexdigest()[:16]


class LocalText(tfds.core.GeneratorBasedBuilder):
    """Named splits of text documents, one example {"text": bytes} per document, in input order."""

    VERSION = tfds.core.Version("1.0.0")
    # No checksums file sits next to this module; without this tfds looks for one and, on
    # Python >= 3.9, imports importlib_resources, which it does not declare as a dependency.
    code_path = None

    def __init__(self, *, splits: Mapping[str, Sequence[Document]], **kwargs):
        self._splits = splits
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            disable_shuffling=True,  # Keep input order: the loader shuffles, and validation must not.
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        return {name: self._generate_examples(docs) for name, docs in self._splits.items()}

    def _generate_examples(self, docs: Sequence[Document]) -> Iterator[tuple[int, dict[str, str]]]:
        for i, doc in enumerate(docs):
            text = doc.read_text(encoding="utf-8", errors="replace") if isinstance(doc, pathlib.Path) else doc
            yield i, {"text": text}


def build_local_text(splits: Mapping[str, Sequence[Document]], cache_dir: os.PathLike) -> LocalText:
    """The prepared dataset for `splits`, written under cache_dir/<fingerprint> the first time only.

    Read a split with `builder.as_data_source(name)`: a random-access sequence of {"text": bytes}.
    """
    data_dir = pathlib.Path(cache_dir) / fingerprint(splits)
    builder = LocalText(splits=splits, data_dir=data_dir, file_format="array_record")
    # tfds writes into a temporary folder and renames it, and skips the work when the version folder exists.
    builder.download_and_prepare()
    return builder
