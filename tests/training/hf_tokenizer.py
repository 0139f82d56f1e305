"""A small GPT-2-style byte-level BPE tokenizer.json, trained here (no hub access): what the HF tests load."""

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

EOS = "<|endoftext|>"


def texts() -> list[str]:
    words = ["the", "king", "queen", "said", "hello", "world", "to", "be", "or", "not", "question", "answer"]
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) + "." for i in range(60)]


def gpt2_style(vocab_size: int = 300) -> tokenizers.Tokenizer:
    """Byte-level BPE as GPT-2's: no prefix space, byte-level decoder, <|endoftext|> the only special token."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts(), trainer)
    return tok
