"""The sentencepiece wrapper round-trips text exactly, covers unseen characters and trains deterministically; a
Hugging Face tokenizer.json loads behind the same interface and encodes as the `tokenizers` library does."""

import json
import random

import pytest
import tokenizers

from meshlm.training.errors import DataError
from meshlm.training.tokenizer import HFTokenizer, SentencePieceTokenizer, Tokenizer, find_in
from tests.training import hf_tokenizer

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


# --- Hugging Face tokenizer.json ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    path.write_text(hf_tokenizer.gpt2_style().to_str())
    return path


def test_load_dispatches_on_the_file(trained, hf_json):
    _, spm_path = trained
    assert isinstance(Tokenizer.load(spm_path), SentencePieceTokenizer)
    assert isinstance(Tokenizer.load(hf_json), HFTokenizer)


@pytest.mark.parametrize("text", ["the king said hello.", "  two  spaces\nand a newline", "snow ☃ 中文 🙂", ""])
def test_hf_tokenizer_matches_the_tokenizers_library(hf_json, text):
    """The same ids as `tokenizers` itself without special tokens, and decode inverts encode (byte-level BPE)."""
    tok = Tokenizer.load(hf_json)
    reference = tokenizers.Tokenizer.from_file(str(hf_json))
    assert tok.encode(text) == reference.encode(text, add_special_tokens=False).ids
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch([text, "the"]) == [tok.encode(text), tok.encode("the")]


def test_hf_special_tokens(hf_json, tmp_path):
    tok = Tokenizer.load(hf_json)
    reference = tokenizers.Tokenizer.from_file(str(hf_json))
    assert tok.eos_id == tok.bos_id == reference.token_to_id(hf_tokenizer.EOS)
    assert tok.vocab_size == reference.get_vocab_size(with_added_tokens=True) == 300
    assert tok.pad_id == -1
    assert tok.encode(hf_tokenizer.EOS) == [tok.eos_id]  # a special token in text is that token
    assert tok.decode([tok.eos_id] + tok.encode("the king")) == "the king"  # special tokens decode to nothing
    # tokenizer_config.json beside the file names the special tokens
    (tmp_path / "tokenizer.json").write_bytes(hf_json.read_bytes())
    eos, bos = reference.id_to_token(100), reference.id_to_token(200)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": eos, "bos_token": {"content": bos}}))
    named = Tokenizer.load(tmp_path / "tokenizer.json")
    assert (named.eos_id, named.bos_id) == (100, 200)


def test_hf_save_in_and_find_in(hf_json, tmp_path):
    tok = Tokenizer.load(hf_json)
    assert find_in(tmp_path) is None
    path = tok.save_in(tmp_path)
    assert path.name == "tokenizer.json" and find_in(tmp_path) == path
    assert Tokenizer.load(path).encode("the queen said") == tok.encode("the queen said")
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temporary file left behind


def test_hf_errors_name_the_fix(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read the tokenizer.json"):
        Tokenizer.load(tmp_path / "tokenizer.json")
    no_eos = tokenizers.Tokenizer(tokenizers.models.BPE())
    (tmp_path / "tokenizer.json").write_text(no_eos.to_str())
    with pytest.raises(DataError, match="tokenizer_config.json naming its eos_token"):
        Tokenizer.load(tmp_path / "tokenizer.json")
    (tmp_path / "garbage.model").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match="neither a sentencepiece model nor a tokenizer.json"):
        Tokenizer.load(tmp_path / "garbage.model")
