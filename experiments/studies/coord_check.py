"""muP's coordinate check (Yang et al. 2022, App. D.1): one preset trained for a few steps at several widths, and per
width and step the RMS of the embedding output, each layer's attention logits and block output, and the output
logits. Under muP they keep their scale as the width grows (attention logits shrink with their init's part); under
the standard parametrization they grow.

Every width trains through the one training setup (training/setup.py: the train step, AdamW with muP's
multipliers) at a constant LR with no warm-up, on uniformly random tokens drawn from train.seed: every width sees the
same batches, and the RMS is measured on one fixed probe batch before the first step and after each step.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from meshlm.model.attention import AttentionMask, KernelFn
from meshlm.model.transformer import Transformer
from meshlm.training import config as config_lib
from meshlm.training import setup as setup_lib


def rms(x: jax.Array, where: jax.Array | None = None) -> jax.Array:
    """The root mean square of x, over the entries where `where` (broadcast to x) is true when it is given."""
    x2 = jnp.square(x.astype(jnp.float32))
    if where is None:
        return jnp.sqrt(jnp.mean(x2))
    return jnp.sqrt(jnp.sum(jnp.where(where, x2, 0.0)) / jnp.sum(jnp.broadcast_to(where, x2.shape)))


def _recording(attend: KernelFn, query_mult: float, sink: list) -> KernelFn:
    """`attend`, recording the RMS of the logits the kernel softmaxes (q.k / sqrt(d_head) times muP's query_mult)
    over the positions the mask shows."""

    def attend_and_record(q_BHTK, k_BGSK, v_BGSK, mask: AttentionMask):
        B, H, T, K = q_BHTK.shape
        G = k_BGSK.shape[1]
        q_BGRTK = q_BHTK.reshape(B, G, H // G, T, K) * (K**-0.5 * query_mult)
        logits_BGRTS = jnp.einsum("bgrtk,bgsk->bgrts", q_BGRTK, k_BGSK)
        sink.append(rms(logits_BGRTS, mask.dense_BTS()[:, None, None]))
        return attend(q_BHTK, k_BGSK, v_BGSK, mask)

    return attend_and_record


def measured(n_layers: int) -> list[str]:
    """The names of the measurements, in the order of the forward pass."""
    return ["embedding", *(f"{kind}/{i}" for i in range(n_layers) for kind in ("attn_logits", "block")), "logits"]


def activation_rms(model: Transformer, tokens_BT: jax.Array) -> dict[str, jax.Array]:
    """{name in `measured`: RMS}, from the model's own modules run one layer at a time (its forward pass scans the
    layers and keeps nothing); the logits are the forward pass's own."""
    cfg, (B, T) = model.cfg, tokens_BT.shape
    dtype = jnp.dtype(cfg.dtype)
    positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    mask = AttentionMask.causal(B, T)
    x_BTD = model.embed[...].astype(dtype)[tokens_BT]
    if cfg.position == "learned":
        x_BTD = x_BTD + model.pos_embed[...].astype(dtype)[positions_BT]
    out = {"embedding": rms(x_BTD)}
    block_def = nnx.graphdef(model.blocks)
    for i, layer in enumerate(model.split_layers()):
        block, logits = nnx.merge(block_def, layer), []
        block.attn.attend = _recording(block.attn.attend, cfg.query_mult, logits)
        x_BTD, _ = block(x_BTD, positions_BT, mask, None, i)
        out[f"attn_logits/{i}"], out[f"block/{i}"] = logits[0], rms(x_BTD)
    out["logits"] = rms(model.head(model.final_norm(x_BTD)))
    return out


def width_config(cfg: config_lib.Config, width: int) -> config_lib.Config:
    """cfg at d_model=width; muP's base width, when not given, is cfg's own d_model (where its LR was chosen)."""
    base = cfg.model.mup_base_width or cfg.model.d_model
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d_model=width, mup_base_width=base))


def check_config(preset: str, steps: int, overrides: list[str]) -> config_lib.Config:
    """The preset trained `steps` steps at its peak LR from the first step (no warm-up, no token clock, no batch
    ramp), then the --set overrides."""
    cfg = config_lib.from_preset(preset)
    opt = dataclasses.replace(cfg.train.optimizer, schedule="constant", warmup_steps=0, warmup_tokens=0, decay_tokens=0)
    train = dataclasses.replace(cfg.train, steps=steps, tokens=0, ramp_tokens=0, optimizer=opt)
    return config_lib.apply_overrides(dataclasses.replace(cfg, train=train), overrides)


def _batch(rng: np.random.Generator, cfg: config_lib.Config) -> dict[str, np.ndarray]:
    tokens = rng.integers(0, cfg.data.vocab_size, (cfg.train.batch_size, cfg.seq_len + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


def train_and_measure(cfg: config_lib.Config) -> dict[str, list[float]]:
    """{measurement: [RMS before the first step, after step 1, ..., after the last]} for one width."""
    setup = setup_lib.build(cfg.validate())
    state = setup.init_state()
    rng = np.random.default_rng(cfg.train.seed)
    place = lambda b: setup.partitioner.global_batch(b, cfg.train.batch_size)
    probe_tokens = place(_batch(rng, cfg))["inputs"]
    measure = jax.jit(lambda params, tokens: activation_rms(nnx.merge(setup.graphdef, params), tokens))
    series = [measure(state.params, probe_tokens)]
    for _ in range(cfg.train.steps):
        state, _ = setup.train_step(state, place(_batch(rng, cfg)))
        series.append(measure(state.params, probe_tokens))
    return {name: [float(s[name]) for s in series] for name in measured(cfg.model.n_layers)}


def coord_check(cfg: config_lib.Config, widths: list[int]) -> dict:
    """{"parametrization": ..., "rms": {measurement: {"WIDTH": [one RMS per step, step 0 first]}}}."""
    rms_by_width = {width: train_and_measure(width_config(cfg, width)) for width in widths}
    names = list(rms_by_width[widths[0]])
    return {
        "parametrization": cfg.model.parametrization,
        "rms": {name: {str(w): rms_by_width[w][name] for w in widths} for name in names},
    }


def spread(result: dict, name: str = "logits", step: int = -1) -> float:
    """Largest over smallest RMS of one measurement across the widths at one step."""
    values = [series[step] for series in result["rms"][name].values()]
    return max(values) / min(values)


def text(result: dict) -> str:
    lines = []
    for name, by_width in result["rms"].items():
        steps = len(next(iter(by_width.values())))
        lines += [f"{name} RMS by step", "width " + "".join(f"{s:>9d}" for s in range(steps))]
        lines += [f"{w:>5} " + "".join(f"{v:9.3g}" for v in series) for w, series in by_width.items()]
        lines.append("")
    widths = list(result["rms"]["logits"])
    lines.append(
        f"{result['parametrization']}: output-logit RMS after the last step varies {spread(result):.2f}x over widths "
        f"{widths[0]}-{widths[-1]}"
    )
    return "\n".join(lines)
