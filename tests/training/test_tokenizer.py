"""The sentencepiece wrapper round-trips text exactly, covers unseen characters and trains deterministically."""

import random

import pytest

from meshlm.training.errors import DataError
from meshlm.training.tokenizer import Tokenizer

VOCAB = 320


def _corpus(n_docs: int = 30) -> list[str]:
    rng = random.Random(0)
    syllables = ["ka", "lo", "mi", "tu", "re", "sa", "no", "vi", "de", "po"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(60)]
    docs = []
    for _ in range(n_docs):
        lines = [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(rng.randint(2, 6))]
        docs.append("\n".join(lines) + "\n")
    return docs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    return Tokenizer.train(_corpus(), VOCAB, path), path


@pytest.mark.parametrize(
    "text",
    ["kalo mitu resa\nnovi  depo\n", "  indented\n\n\ttab and trailing  ", "snow ☃ and 中文 and émoji 🙂", "\n", ""],
)
def test_roundtrip_is_exact(trained, text):
    tokenizer, _ = trained
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text


def test_unseen_characters_fall_back_to_bytes(trained):
    tokenizer, _ = trained
    ids = tokenizer.encode("☃")
    assert len(ids) == len("☃".encode())  # three UTF-8 bytes, three byte tokens, no unknown token
    assert 0 not in ids  # sentencepiece's <unk>


def test_special_ids(trained):
    tokenizer, _ = trained
    assert tokenizer.vocab_size == VOCAB
    assert tokenizer.pad_id == -1
    assert len({tokenizer.eos_id, tokenizer.bos_id, 0}) == 3
    normal = {i for doc in _corpus() for i in tokenizer.encode(doc)}
    assert tokenizer.eos_id not in normal and tokenizer.bos_id not in normal
    assert tokenizer.decode([tokenizer.eos_id]) == ""


def test_encode_batch_matches_encode(trained):
    tokenizer, _ = trained
    docs = _corpus(5)
    assert tokenizer.encode_batch(docs) == [tokenizer.encode(d) for d in docs]


def test_save_load_and_deterministic_training(trained, tmp_path):
    tokenizer, path = trained
    loaded = Tokenizer.load(path)
    text = "\n".join(_corpus(3))
    assert loaded.encode(text) == tokenizer.encode(text)
    Tokenizer.train(_corpus(), VOCAB, tmp_path / "again.model")
    assert (tmp_path / "again.model").read_bytes() == path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again.model"]  # no temporary file left behind


def test_char_cap_limits_training_text(tmp_path):
    capped = Tokenizer.train(_corpus(), VOCAB, tmp_path / "capped.model", max_chars=400)
    full = Tokenizer.train(_corpus(), VOCAB, tmp_path / "full.model")
    assert capped.encode(_corpus()[-1]) != full.encode(_corpus()[-1])


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="lower data.vocab_size"):
        Tokenizer.train(["tiny text"], 5000, tmp_path / "t.model")
    with pytest.raises(DataError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing.model")
