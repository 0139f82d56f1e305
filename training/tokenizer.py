"""Tokenizers behind one interface (encode, decode, vocab_size, eos_id, save), loaded from whatever file a run
holds: a sentencepiece `.model` (what meshlm trains: BPE that round-trips any UTF-8 text exactly) or a Hugging Face
`tokenizer.json` (through the `tokenizers` library, so a converted GPT-2 tokenizes exactly as transformers does)."""

import abc
import io
import json
from collections.abc import Iterable, Iterator, Sequence

import sentencepiece as spm
import tokenizers
from etils import epath

from meshlm.training.atomic import write_atomic
from meshlm.training.errors import DataError

# What a run directory calls each kind's file; `find_in` looks for them in this order.
SENTENCEPIECE_FILE = "tokenizer.model"
HF_FILE = "tokenizer.json"
FILE_NAMES = (SENTENCEPIECE_FILE, HF_FILE)

# A tokenizer.json does not say which token ends a document: tokenizer_config.json beside it does, else the first
# of these names that the vocabulary holds.
HF_CONFIG_FILE = "tokenizer_config.json"
_EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")

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


def find_in(directory: epath.PathLike) -> epath.Path | None:
    """The tokenizer file a run directory holds, if any."""
    for name in FILE_NAMES:
        if (path := epath.Path(directory) / name).exists():
            return path
    return None


class Tokenizer(abc.ABC):
    """Text <-> token ids. EOS ends (and, GPT-2 style, begins) every document; there is no pad token.
    Special tokens decode to nothing, so decode(encode(text)) == text."""

    file_name: str  # what a run directory calls this kind's file

    @staticmethod
    def load(path: epath.PathLike) -> "Tokenizer":
        """A sentencepiece model or a Hugging Face tokenizer.json, told apart by their content."""
        path = epath.Path(path)
        if not path.is_file():
            raise DataError(
                f"tokenizer {path} does not exist; point data.tokenizer at a sentencepiece .model or a Hugging Face "
                "tokenizer.json, or set it to ''"
            )
        data = path.read_bytes()
        if data.lstrip()[:1] == b"{":
            config_path = path.parent / HF_CONFIG_FILE
            config = json.loads(config_path.read_text()) if config_path.exists() else {}
            return HFTokenizer.from_json(data.decode(), config)
        try:
            return SentencePieceTokenizer(spm.SentencePieceProcessor(model_proto=data))
        except (RuntimeError, TypeError, ValueError):  # sentencepiece: "Failed to parse model"
            raise DataError(
                f"{path} is neither a sentencepiece model nor a tokenizer.json; point data.tokenizer at one of them"
            ) from None

    @staticmethod
    def train(
        texts: Iterable[str], vocab_size: int, path: epath.PathLike, max_chars: int | None = None
    ) -> "SentencePieceTokenizer":
        return SentencePieceTokenizer.train(texts, vocab_size, path, max_chars=max_chars)

    @abc.abstractmethod
    def to_bytes(self) -> bytes:
        """Implemented by each kind of tokenizer."""

    def save(self, path: epath.PathLike) -> None:
        """Write the tokenizer so that readers see the old file or the whole new one, never a part."""
        path = epath.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self.to_bytes())

    def save_in(self, directory: epath.PathLike) -> epath.Path:
        """Save under this kind's run-directory name; returns the path."""
        path = epath.Path(directory) / self.file_name
        self.save(path)
        return path

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Implemented by each kind of tokenizer."""

    @property
    @abc.abstractmethod
    def eos_id(self) -> int:
        """Implemented by each kind of tokenizer."""

    @property
    @abc.abstractmethod
    def bos_id(self) -> int:
        """Implemented by each kind of tokenizer."""

    @property
    def pad_id(self) -> int:
        """-1: batches pad with 0 and mark padding with segment id 0 instead."""
        return -1

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Implemented by each kind of tokenizer."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Implemented by each kind of tokenizer."""


class SentencePieceTokenizer(Tokenizer):
    file_name = SENTENCEPIECE_FILE

    def __init__(self, processor: spm.SentencePieceProcessor):
        self._sp = processor

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, path: epath.PathLike, max_chars: int | None = None
    ) -> "SentencePieceTokenizer":
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

    def to_bytes(self) -> bytes:
        return self._sp.serialized_model_proto()

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
        return self._sp.pad_id()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(list(ids))


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` tokenizer. Encoding adds no special tokens (lm-eval and meshlm add EOS
    themselves), which for GPT-2 is what transformers does either way."""

    file_name = HF_FILE

    def __init__(self, tokenizer: tokenizers.Tokenizer, eos_id: int, bos_id: int):
        self._tok, self._eos, self._bos = tokenizer, eos_id, bos_id

    @classmethod
    def from_json(cls, text: str, config: dict | None = None) -> "HFTokenizer":
        """From tokenizer.json's text; `config` is tokenizer_config.json's content (it names eos and bos)."""
        try:
            tok = tokenizers.Tokenizer.from_str(text)
        except Exception as e:  # the Rust parser raises a bare Exception
            raise DataError(f"cannot read the tokenizer.json ({e}); pass a file that `tokenizers` can load") from None
        config = config or {}
        eos = _token_id(tok, config.get("eos_token"))
        if eos is None:
            eos = next((i for name in _EOS_NAMES if (i := tok.token_to_id(name)) is not None), None)
        if eos is None:
            raise DataError(
                f"the tokenizer.json has none of {', '.join(_EOS_NAMES)}; put a {HF_CONFIG_FILE} naming its "
                "eos_token beside it"
            )
        bos = _token_id(tok, config.get("bos_token"))
        return cls(tok, eos_id=eos, bos_id=eos if bos is None else bos)

    def to_bytes(self) -> bytes:
        return self._tok.to_str().encode()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def bos_id(self) -> int:
        return self._bos

    def id_to_token(self, i: int) -> str:
        return self._tok.id_to_token(i)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


def _token_id(tok: tokenizers.Tokenizer, token) -> int | None:
    """The id of a tokenizer_config.json token entry (a string, or a dict with `content`), if the vocab has it."""
    if isinstance(token, dict):
        token = token.get("content")
    return tok.token_to_id(token) if isinstance(token, str) else None


class ByteCodec:
    """UTF-8 bytes as token ids, for a randomly initialised preset that has no tokenizer."""

    eos_id = 0
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 < i < 256).decode("utf-8", errors="replace")
