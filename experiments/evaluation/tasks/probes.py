"""In-context-learning probes that need no prompt format: per-position loss and the ICL score (Olsson et al.
2022), induction on repeated random tokens (loss and per-head prefix-matching attention), rolling perplexity."""

import functools
import math
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from meshlm.experiments.evaluation import metrics
from meshlm.experiments.evaluation.requests import LanguageModel
from meshlm.model.attention import AttentionMask
from meshlm.model.attention.position import apply_position

NAMES = ("icl_score", "induction", "perplexity")
EARLY, LATE = 50, 500  # Olsson et al.: the loss of the 500th token minus that of the 50th
MAX_ROWS = 256  # held-out windows scored by icl_score
MAX_TOKENS = 65_536  # held-out tokens scored by perplexity
INDUCTION_ROWS, INDUCTION_LENGTH = 16, 64


def heldout_rows(lm: LanguageModel, texts: Sequence[str], length: int, max_rows: int) -> list[list[int]]:
    """Disjoint windows of `length` tokens of the held-out documents, each document opened by EOS as in training."""
    rows = []
    for text in texts:
        tokens = [lm.eos] + lm.tokenizer.encode(text)
        rows += [tokens[s : s + length] for s in range(0, len(tokens) - length + 1, length)]
        if len(rows) >= max_rows:
            break
    return rows[:max_rows]


def icl_score(lm: LanguageModel, texts: Sequence[str]) -> dict:
    """Mean loss of the token at index LATE minus that at index EARLY (0-based; index 0 is the window's first
    token, so the LATE token is predicted from LATE tokens of context). Negative: later tokens are predicted
    better, i.e. the model uses its context. For n_ctx < 501 the late index is n_ctx, and the early one a tenth
    of it when n_ctx <= 50."""
    late = min(LATE, lm.n_ctx)
    early = EARLY if late > EARLY else max(1, late // 10)  # Olsson's 1:10 ratio for short-context models
    rows = heldout_rows(lm, texts, late + 1, MAX_ROWS)
    if not rows:
        return {"error": f"no held-out document has {late + 1} tokens"}
    nll_RT = -np.stack(lm.per_token_logprobs(rows))  # column t predicts token t + 1
    curve = nll_RT.mean(0)
    icl, stderr = metrics.mean_stderr(nll_RT[:, late - 1] - nll_RT[:, early - 1])
    return {
        "icl_score": icl,
        "icl_score_stderr": stderr,  # one token per row at each index: a noisy estimate on few rows
        # Named by its indices: a score at shorter contexts is another measure than Olsson's, not a noisier one.
        "measure": f"icl_score@{late}-{early}",
        **(
            {"note": f"n_ctx {lm.n_ctx} < {LATE}: the late index is the last position, not Olsson's {LATE}"}
            if late < LATE
            else {}
        ),
        "loss_early": float(curve[early - 1]),
        "loss_late": float(curve[late - 1]),
        "early_index": early,
        "late_index": late,
        "rows": len(rows),
        "loss_by_position": [round(float(x), 4) for x in curve],
    }


def repeated_random_tokens(token_pool: Sequence[int], rows: int, length: int, eos: int, seed: int) -> np.ndarray:
    """[rows, 1 + 2 length]: EOS, then `length` tokens drawn without replacement from the pool, then the same again."""
    rng = np.random.default_rng(seed)
    first_RL = np.stack([rng.choice(np.asarray(token_pool), size=length, replace=False) for _ in range(rows)])
    return np.concatenate([np.full((rows, 1), eos), first_RL, first_RL], axis=1).astype(np.int32)


def induction(lm: LanguageModel, token_pool: Sequence[int], seed: int = 0) -> dict:
    """Loss on the first and the repeated copy of random tokens (targets 2..L of each copy: the first token of a
    copy cannot be inferred), and each head's prefix-matching score: the attention a query in the second copy
    pays to the token after the earlier occurrence of its own token (Olsson et al.'s induction pattern)."""
    length = min(INDUCTION_LENGTH, (lm.n_ctx - 1) // 2, len(token_pool))
    tokens_RT = repeated_random_tokens(token_pool, INDUCTION_ROWS, length, lm.eos, seed)
    nll_RT = -np.stack(lm.per_token_logprobs([list(r) for r in tokens_RT]))  # column t predicts token t + 1
    first = nll_RT[:, 1:length].mean()  # targets at 2..L: the first copy after its first token
    second = nll_RT[:, length + 1 : 2 * length].mean()  # the same targets in the repeat
    losses = {"loss_first_copy": float(first), "loss_repeat": float(second), "loss_ratio": float(second / first)}
    if lm.cfg.attention_layer != "mha":  # the per-head recomputation below knows the multi-head layer only
        return {**losses, "sequence_length": length}
    probs_LBHTS, logits_BTV = attention_probs(lm.graphdef, lm.params, jnp.asarray(tokens_RT))
    queries = np.arange(length) + length + 1  # every token of the second copy
    keys = np.arange(length) + 2  # the token after its earlier occurrence
    prefix_LH = np.asarray(probs_LBHTS)[:, :, :, queries, keys].mean(axis=(1, 3))
    model_logits_BTV = np.asarray(_forward(lm.graphdef, lm.params, jnp.asarray(tokens_RT)))
    layer, head = np.unravel_index(np.argmax(prefix_LH), prefix_LH.shape)
    return {
        **losses,
        "prefix_matching_max": float(prefix_LH.max()),
        "prefix_matching_argmax": [int(layer), int(head)],
        "prefix_matching": np.round(prefix_LH, 4).tolist(),  # [layer][head]
        "sequence_length": length,
        # The probe recomputes the attention math; this checks it against the model's own forward pass.
        "recompute_max_abs_diff": float(np.abs(np.asarray(logits_BTV) - model_logits_BTV).max()),
    }


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens_BT: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(tokens_BT)[0]


@functools.partial(jax.jit, static_argnums=0)
def attention_probs(graphdef, state, tokens_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every layer's attention weights [L, B, H, T, S] and the final logits, by re-running the model's block math
    with the weights made explicit (the model's attention functions never materialise them)."""
    model = nnx.merge(graphdef, state)
    cfg, dtype = model.cfg, jnp.dtype(model.cfg.dtype)
    B, T = tokens_BT.shape
    positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    mask = AttentionMask.causal(B, T)
    x_BTD = model.embed[...].astype(dtype)[tokens_BT]
    if cfg.position == "learned":
        x_BTD = x_BTD + model.pos_embed[...].astype(dtype)[positions_BT]
    block_def = nnx.graphdef(model.blocks)
    probs = []
    for layer_params in model.split_layers():
        block = nnx.merge(block_def, layer_params)
        attn = block.attn
        qkv_3BHTK = jnp.einsum("btd,dchk->cbhtk", block.attn_norm(x_BTD), attn.w_qkv[...].astype(dtype))
        if attn.b_qkv is not None:
            qkv_3BHTK = qkv_3BHTK + attn.b_qkv[...].astype(dtype)[:, None, :, None]
        q_BHTK, k_BHTK, v_BHTK = qkv_3BHTK[0], qkv_3BHTK[1], qkv_3BHTK[2]
        if attn.q_norm is not None:
            q_BHTK, k_BHTK = attn.q_norm(q_BHTK), attn.k_norm(k_BHTK)
        q_BHTK, k_BHTK, layer_mask = apply_position(cfg, q_BHTK, k_BHTK, positions_BT, mask)
        q_BHTK = q_BHTK * cfg.query_mult  # muP's q.k / d_head, as the model's attention layers scale it
        logits_BHTS = jnp.einsum("bhtk,bhsk->bhts", q_BHTK, k_BHTK).astype(jnp.float32) * cfg.head_dim**-0.5
        bias_BHTS = layer_mask.bias_BHTS(cfg.n_heads)
        if bias_BHTS is not None:
            logits_BHTS = logits_BHTS + bias_BHTS
        logits_BHTS = jnp.where(layer_mask.dense_BTS()[:, None], logits_BHTS, jnp.finfo(jnp.float32).min)
        probs_BHTS = jax.nn.softmax(logits_BHTS, axis=-1)
        probs.append(probs_BHTS)
        out_BHTK = jnp.einsum("bhts,bhsk->bhtk", probs_BHTS.astype(dtype), v_BHTK)
        x_BTD = x_BTD + attn.project_out(out_BHTK)
        x_BTD = x_BTD + block.mlp(block.mlp_norm(x_BTD))
    return jnp.stack(probs), model.head(model.final_norm(x_BTD))


def perplexity(lm: LanguageModel, texts: Sequence[str]) -> dict:
    """Rolling log-likelihood of held-out documents (up to MAX_TOKENS tokens): per token, per word, per byte."""
    docs, total = [], 0
    for text in texts:
        tokens = lm.tokenizer.encode(text)
        if total + len(tokens) > MAX_TOKENS:
            text = lm.tokenizer.decode(tokens[: MAX_TOKENS - total])
            tokens = lm.tokenizer.encode(text)
        docs.append((text, tokens))
        total += len(tokens)
        if total >= MAX_TOKENS:
            break
    if not docs:
        return {"error": "no held-out text"}
    ll_D = np.array(lm.loglikelihood_rolling([t for _, t in docs]))
    counts = {
        "byte": [len(text.encode("utf-8")) for text, _ in docs],
        "word": [len(re.split(r"\s+", text)) for text, _ in docs],  # lm-eval's word count
        "token": [len(tokens) for _, tokens in docs],
    }
    ll, n_bytes = float(ll_D.sum()), sum(counts["byte"])
    out = {"bits_per_byte": metrics.bits_per_byte(ll, n_bytes)}
    out |= {f"{unit}_perplexity": metrics.perplexity(ll, sum(n)) for unit, n in counts.items()}
    # Standard errors over documents resampled: a perplexity is a ratio of sums, not a mean of per-document values.
    out["bits_per_byte_stderr"] = metrics.bootstrap_stderr(
        lambda ll, n: -ll.sum(-1) / n.sum(-1) / math.log(2), ll_D, counts["byte"]
    )
    for unit, n in counts.items():
        out[f"{unit}_perplexity_stderr"] = metrics.bootstrap_stderr(
            lambda ll, n: np.exp(-ll.sum(-1) / n.sum(-1)), ll_D, n
        )
    return out | {"tokens": total, "bytes": n_bytes, "documents": len(docs)}
