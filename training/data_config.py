"""Where training text comes from and how it becomes token batches."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str = "shakespeare"  # "shakespeare" (embedded default) | "tfds:NAME[/CONFIG][:VERSION]" | "text:GLOB"
    vocab_size: int = 4096  # sentencepiece vocabulary size
    tokenizer: str = ""  # an existing sentencepiece .model; "" = train one on the training split
    segment_ids: bool = True  # pack whole documents; attention never crosses documents
    text_key: str = "text"  # the TFDS feature that holds the text
    train_split: str = "train"
    val_split: str = "validation"
    cache_dir: str = ""  # "" = $MESHLM_CACHE or ~/.cache/meshlm
    tokenizer_train_chars: int = 20_000_000  # cap on characters fed to the sentencepiece trainer
    shuffle_window: int = 1024  # rows shuffled together, so the pieces of a long document spread over many batches
