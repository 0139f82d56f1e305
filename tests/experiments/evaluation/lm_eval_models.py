"""lm-eval's `hf` model reading meshlm's EOS before every context, as `meshlm eval` does, so that both score the
same tokens: the reference the parity tests hold meshlm against."""

from tests.training import hf_tokenizer


def eos_first_hflm(pretrained, batch_size: int = 8):
    from lm_eval.models.huggingface import HFLM  # deferred: torch and lm-eval are test extras

    class EosFirstHFLM(HFLM):
        def tok_encode(self, string, *args, **kwargs):
            return [self.eot_token_id] + super().tok_encode(string, *args, **kwargs)

        def tok_batch_encode(self, strings, *args, **kwargs):  # generation prompts
            return super().tok_batch_encode([hf_tokenizer.EOS + s for s in strings], *args, **kwargs)

    return EosFirstHFLM(pretrained=str(pretrained), dtype="float32", batch_size=batch_size, device="cpu")
