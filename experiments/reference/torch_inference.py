"""Hugging Face transformers' inference paths of a GPT-2 (from torch_gpt2.hf_gpt2), the yardsticks for `meshlm bench
decode --against hf-gpt2` and `meshlm bench eval`: `generate` with its KV cache, and scoring requests in batches."""

from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers import GenerationConfig

from meshlm.model.scoring import right_padded


def generate_fn(model, prompts_BP: np.ndarray, new_tokens: int) -> Callable[[], np.ndarray]:
    """A call of greedy `generate` (KV cache on) that makes exactly new_tokens tokens per prompt: [B, new_tokens]."""
    ids_BP = torch.from_numpy(np.asarray(prompts_BP, np.int64))
    config = GenerationConfig(
        max_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
        eos_token_id=None,  # never stop early: every contestant makes every token
        pad_token_id=0,
    )

    def run() -> np.ndarray:
        with torch.inference_mode():
            out_BT = model.generate(input_ids=ids_BP, attention_mask=torch.ones_like(ids_BP), generation_config=config)
        return out_BT[:, ids_BP.shape[1] :].numpy()

    return run


def score_fn(
    model, requests: Sequence[tuple[list[int], list[int]]], batches: Sequence[Sequence[int]]
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """A call that scores every (context, continuation) request in the given batches, as lm-evaluation-harness
    runs a Hugging Face model: each batch right-padded to its longest row, no attention mask (causal: padding
    only follows). Returns per request the continuation's summed log-probability and whether it was greedy."""
    prepared = []
    for batch in batches:
        rows = [requests[i] for i in batch]
        T = max(len(c) + len(x) - 1 for c, x in rows)
        inputs_BT, targets_BT, weight_BT = right_padded([c for c, _ in rows], [x for _, x in rows], T)
        prepared.append(
            (list(batch), torch.from_numpy(inputs_BT).long(), torch.from_numpy(targets_BT).long(), weight_BT)
        )

    def run() -> tuple[np.ndarray, np.ndarray]:
        logprob_R, greedy_R = np.zeros(len(requests)), np.zeros(len(requests), bool)
        with torch.inference_mode():
            for batch, inputs_BT, targets_BT, weight_BT in prepared:
                logits_BTV = model(input_ids=inputs_BT, use_cache=False).logits.float()
                target_BT = torch.log_softmax(logits_BTV, dim=-1).gather(-1, targets_BT[..., None])[..., 0]
                greedy_BT = (logits_BTV.argmax(-1) == targets_BT).numpy()
                logprob_R[batch] = np.sum(target_BT.double().numpy() * weight_BT, axis=-1)
                greedy_R[batch] = np.all(greedy_BT | (weight_BT == 0), axis=-1)
        return logprob_R, greedy_R

    return run
