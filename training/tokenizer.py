"""A sentencepiece BPE tokenizer that round-trips any UTF-8 text exactly."""

import io
from collections.abc import Iterable, Iterator, Sequence

import sentencepiece as spm
from etils import epath

from meshlm.training.atomic import write_atomic
from meshlm.training.errors import DataError

# sentencepiece silently drops training sentences longer than max_sentence_length bytes,
# so long lines are cut into pieces that fit even at 4 bytes per character.
_MAX_LINE_CHARS = 4096
_MAX_SENTENCE_BYTES = 4 * _MAX_LINE_CHARS


def _training_lines(texts: Iterable[str], max_chars: int | None) -> Iterator[str]:
    """Non-blank lines of `texts`, cut to sentencepiece's length limit, until `max_chars` characters."""
    total = 0
    for text in texts:
        for line in text.split("\n"):
            if not line.strip():
                continue
            for start in range(0, len(line), _MAX_LINE_CHARS):
                piece = line[start : start + _MAX_LINE_CHARS]
                yield piece
                total += len(piece)
                if max_chars is not None and total >= max_chars:
                    return


class Tokenizer:
    """Text <-> token ids. EOS ends (and, GPT-2 style, begins) every document; there is no pad token."""

    def __init__(self, processor: spm.SentencePieceProcessor):
        self._sp = processor

    @classmethod
    def load(cls, path: epath.PathLike) -> "Tokenizer":
        path = epath.Path(path)
        if not path.is_file():
            raise DataError(
                f"tokenizer {path} does not exist; point data.tokenizer at a sentencepiece .model or set it to ''"
            )
        try:
            return cls(spm.SentencePieceProcessor(model_proto=path.read_bytes()))
        except (RuntimeError, TypeError, ValueError, OSError) as e:  # sentencepiece: "Failed to parse model"
            raise DataError(
                f"{path} is not a sentencepiece model ({type(e).__name__}); point data.tokenizer at a .model file, "
                "or restore the run's tokenizer.model"
            ) from None

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, path: epath.PathLike, max_chars: int | None = None
    ) -> "Tokenizer":
        """Train BPE on the lines of `texts` (at most `max_chars` characters) and write the model to `path`.

        The result is a function of the text alone: input order is kept and nothing is sampled.
        """
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_training_lines(texts, max_chars),
                model_writer=model,
                model_type="bpe",
                vocab_size=vocab_size,
                byte_fallback=True,  # characters never seen in training still encode, as UTF-8 bytes
                # Identity normalization and no dummy prefix make decode(encode(s)) == s.
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                allow_whitespace_only_pieces=True,  # indentation becomes a few tokens, not one per space
                user_defined_symbols=["\n"],  # lines are trained separately, so newline needs its own piece
                split_digits=True,
                max_sentence_length=_MAX_SENTENCE_BYTES,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                num_threads=1,
                minloglevel=2,
            )
        except RuntimeError as e:
            raise DataError(
                f"cannot train a {vocab_size}-token tokenizer ({e}); lower data.vocab_size or add text"
            ) from None
        tokenizer = cls(spm.SentencePieceProcessor(model_proto=model.getvalue()))
        tokenizer.save(path)
        return tokenizer

    def save(self, path: epath.PathLike) -> None:
        """Write the model so that readers see the old file or the whole new one, never a part."""
        path = epath.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self._sp.serialized_model_proto())

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def pad_id(self) -> int:
        """-1: batches pad with 0 and mark padding with segment id 0 instead."""
        return self._sp.pad_id()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(list(ids))
