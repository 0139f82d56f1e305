"""Toy tokenizers with known behaviour, and small models, for the evaluation tests."""

from flax import nnx

from meshlm.model.config import ModelConfig
from meshlm.model.transformer import Transformer

TINY = ModelConfig(vocab_size=97, n_ctx=32, n_layers=2, d_model=32, n_heads=4)


class PieceTokenizer:
    """Greedy longest match over `pieces`, then single characters: merges across a context/continuation
    boundary happen exactly where a piece spans it. Id 0 is EOS."""

    eos_id, bos_id = 0, -1

    def __init__(
        self, pieces=(), alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;?!=->+*()\n"
    ):
        self.vocab = ["<eos>"] + list(dict.fromkeys(list(alphabet) + list(pieces)))
        self.ids = {p: i for i, p in enumerate(self.vocab)}
        self.longest = max(map(len, self.vocab[1:]))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        out, i = [], 0
        while i < len(text):
            for n in range(min(self.longest, len(text) - i), 0, -1):
                if text[i : i + n] in self.ids:
                    out.append(self.ids[text[i : i + n]])
                    i += n
                    break
            else:
                raise ValueError(f"cannot encode {text[i]!r}")
        return out

    def decode(self, ids) -> str:
        return "".join(self.vocab[i] for i in ids if i != 0)


def tiny_model(seed: int = 0, **changes) -> Transformer:
    import dataclasses

    return Transformer(dataclasses.replace(TINY, **changes), nnx.Rngs(seed))
