"""In-context-learning probes that need no prompt format: per-position loss and the ICL score (Olsson et al.
2022), induction on repeated random tokens (loss, and per head Olsson et al.'s prefix matching and copying), rolling
perplexity."""

import functools
import math
import re
from collections.abc import Sequence
from typing import NamedTuple

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
STANDARD = f"icl_score@{LATE}-{EARLY}"
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
    better, i.e. the model uses its context. For n_ctx < LATE the late index is n_ctx, and the early one a tenth
    of it when n_ctx <= 50. The score's key names both indices: icl_score@LATE-EARLY."""
    late = min(LATE, lm.n_ctx)
    early = EARLY if late > EARLY else max(1, late // 10)  # Olsson's 1:10 ratio for short-context models
    rows = heldout_rows(lm, texts, late + 1, MAX_ROWS)
    if not rows:
        return {"error": f"no held-out document has {late + 1} tokens"}
    nll_RT = -np.stack(lm.per_token_logprobs(rows))  # column t predicts token t + 1
    curve = nll_RT.mean(0)
    icl, stderr = metrics.mean_stderr(nll_RT[:, late - 1] - nll_RT[:, early - 1])
    # Named by its indices: a score at other indices is another measure than Olsson's, not a noisier one.
    name = f"icl_score@{late}-{early}"
    return {
        name: icl,
        f"{name}_stderr": stderr,  # one token per row at each index: a noisy estimate on few rows
        "measure": name,
        **(
            {"note": f"not the standard {STANDARD}, which needs n_ctx >= {LATE} (this model's is {lm.n_ctx})"}
            if name != STANDARD
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
    copy cannot be inferred), and Olsson et al.'s two properties of an induction head, per head, on the queries of
    the second copy: prefix matching (the attention paid to the token after the earlier occurrence of the query's
    own token) and copying (`copying_scores`)."""
    length = min(INDUCTION_LENGTH, (lm.n_ctx - 1) // 2, len(token_pool))
    tokens_RT = repeated_random_tokens(token_pool, INDUCTION_ROWS, length, lm.eos, seed)
    nll_RT = -np.stack(lm.per_token_logprobs([list(r) for r in tokens_RT]))  # column t predicts token t + 1
    first = nll_RT[:, 1:length].mean()  # targets at 2..L: the first copy after its first token
    second = nll_RT[:, length + 1 : 2 * length].mean()  # the same targets in the repeat
    losses = {"loss_first_copy": float(first), "loss_repeat": float(second), "loss_ratio": float(second / first)}
    if lm.cfg.attention_layer != "mha":  # the per-head recomputation below knows the multi-head layer only
        return {**losses, "sequence_length": length}
    heads = head_activations(lm.graphdef, lm.params, jnp.asarray(tokens_RT))
    probs_LBHTS = np.asarray(heads.probs_LBHTS)
    queries = np.arange(length) + length + 1  # every token of the second copy
    keys = np.arange(length) + 2  # the token after its earlier occurrence
    prefix_LH = probs_LBHTS[:, :, :, queries, keys].mean(axis=(1, 3))
    copying_LH = copying_scores(probs_LBHTS, np.asarray(heads.direct_LBHTS), queries, distinct=length + 1)
    model_logits_BTV = np.asarray(_forward(lm.graphdef, lm.params, jnp.asarray(tokens_RT)))
    return {
        **losses,
        **_per_head("prefix_matching", prefix_LH),
        **_per_head("copying", copying_LH),
        "sequence_length": length,
        # The probe recomputes the attention math; this checks it against the model's own forward pass.
        "recompute_max_abs_diff": float(np.abs(np.asarray(heads.logits_BTV) - model_logits_BTV).max()),
    }


def _per_head(name: str, score_LH: np.ndarray) -> dict:
    layer, head = np.unravel_index(np.argmax(score_LH), score_LH.shape)
    return {
        f"{name}_max": float(score_LH.max()),
        f"{name}_argmax": [int(layer), int(head)],
        name: np.round(score_LH, 4).tolist(),  # [layer][head]
    }


def copying_scores(probs_LBHTS: np.ndarray, direct_LBHTS: np.ndarray, queries: np.ndarray, distinct: int) -> np.ndarray:
    """[L, H]: Olsson et al.'s copying, whether a head's output raises the logits of the tokens it attends to.
    Positions 0..distinct-1 of each row hold its distinct tokens, the sample. Per query t, with d(v) the head's
    direct-path logit change of sample token v minus its mean over the sample, a_ts the attention weights and x_s
    the token at s: copying_t = sum_s a_ts d(x_s) / sum_v relu(d(v)), in [-1, 1] (1: raises only the tokens it
    attends to, -1: lowers only them, ~0: no preference); averaged over rows and queries."""
    d_LBHQS = direct_LBHTS[..., queries, :]
    d_LBHQS = d_LBHQS - d_LBHQS[..., :distinct].mean(-1, keepdims=True)
    raised_LBHQ = np.maximum(d_LBHQS[..., :distinct], 0).sum(-1)
    attended_LBHQ = (probs_LBHTS[..., queries, :] * d_LBHQS).sum(-1)
    # A head that writes nothing the unembedding reads raises nothing: it does not copy.
    copying_LBHQ = np.divide(attended_LBHQ, raised_LBHQ, out=np.zeros_like(raised_LBHQ), where=raised_LBHQ > 0)
    return copying_LBHQ.mean(axis=(1, 3))


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens_BT: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(tokens_BT)[0]


class Heads(NamedTuple):
    probs_LBHTS: jax.Array  # every head's attention weights, query t to key s
    # What each head's output at t adds to the logit of the token at position s along the direct path: through the
    # final norm with the statistics of the whole residual stream at t, and the unembedding, no later layer.
    direct_LBHTS: jax.Array
    logits_BTV: jax.Array  # the final logits, to check the recomputation against the model


@functools.partial(jax.jit, static_argnums=0)
def head_activations(graphdef, state, tokens_BT: jax.Array) -> Heads:
    """Per-head attention weights and direct-path logits, by re-running the model's block math with the weights
    made explicit (the model's attention functions never materialise them)."""
    model = nnx.merge(graphdef, state)
    cfg, dtype = model.cfg, jnp.dtype(model.cfg.dtype)
    B, T = tokens_BT.shape
    positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    mask = AttentionMask.causal(B, T)
    x_BTD = model.embed[...].astype(dtype)[tokens_BT]
    if cfg.position == "learned":
        x_BTD = x_BTD + model.pos_embed[...].astype(dtype)[positions_BT]
    unembed_BSD = _unembedding(model)[tokens_BT]
    block_def = nnx.graphdef(model.blocks)
    probs, direct = [], []
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
        written_BHTD = jnp.einsum("bhtk,hkd->bhtd", out_BHTK.astype(jnp.float32), attn.w_out[...].astype(jnp.float32))
        direct.append(jnp.einsum("bhtd,bsd->bhts", _final_norm_linear(model, written_BHTD), unembed_BSD))
        x_BTD = x_BTD + attn.project_out(out_BHTK)
        x_BTD = x_BTD + block.mlp(block.mlp_norm(x_BTD))
    direct_LBHTS = jnp.stack(direct) * _final_norm_factor(model, x_BTD)[None, :, None, :, None]
    return Heads(jnp.stack(probs), direct_LBHTS, model.head(model.final_norm(x_BTD)))


def _unembedding(model) -> jax.Array:
    """[V, D] in f32: row v is what Transformer.head dots a normed hidden state with for token v's logit."""
    w_out_DV = model.embed[...].T if model.cfg.tie_embeddings else model.unembed[...]
    return w_out_DV.T.astype(jnp.float32) * model.cfg.output_mult


def _final_norm_linear(model, written_XD: jax.Array) -> jax.Array:
    """The final norm's action on one addend of the residual stream, but for the division by the whole stream's
    scale (`_final_norm_factor`): LayerNorm centres every addend, and both norms multiply by their scale."""
    if model.cfg.norm != "rmsnorm":
        written_XD = written_XD - written_XD.mean(-1, keepdims=True)
    return written_XD * model.final_norm.scale[...].astype(jnp.float32)


def _final_norm_factor(model, x_BTD: jax.Array) -> jax.Array:
    """[B, T]: 1 / the residual stream's RMS (after centring, for LayerNorm), as the final norm divides by it."""
    x_BTD = x_BTD.astype(jnp.float32)
    if model.cfg.norm != "rmsnorm":
        x_BTD = x_BTD - x_BTD.mean(-1, keepdims=True)
    return jax.lax.rsqrt((x_BTD * x_BTD).mean(-1) + model.final_norm.eps)


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
