"""On one NVIDIA GPU: a bf16 training step against the same step in f32, and the `fused` kernel running cuDNN flash
attention against the `reference` kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meshlm.experiments.bench.train import build_train_step
from meshlm.model import attention
from meshlm.model.attention import AttentionMask
from meshlm.training import config as config_lib

pytestmark = pytest.mark.gpu

BF16_EPS = (
    2.0**-8
)  # bf16 keeps 8 significant bits: rounding one operand errs by at most 2^-8 relative (2^-9 to nearest)


def _two_steps(dtype: str) -> list[dict]:
    cfg = config_lib.from_preset(
        "tiny",
        [
            "model.n_layers=2",
            "model.d_model=256",
            "model.n_heads=4",
            f"model.dtype={dtype}",
            "model.attention=fused",
            "train.batch_size=8",
            "train.seq_len=256",
            "train.optimizer.warmup_steps=0",  # the first step already moves the parameters
        ],
    ).validate()
    compiled, state, batch, _, _ = build_train_step(cfg, jax.devices()[:1])
    out = []
    for _ in range(2):
        state, metrics = compiled(state, batch)
        out.append({k: float(v) for k, v in metrics.items() if v.ndim == 0})  # per-row metrics are not compared
    return out


def test_bf16_training_step_matches_f32():
    """Same initial f32 parameters and batch. In bf16 every matmul rounds both operands (f32 accumulation), so each
    of the 2L + 1 matmuls on the path to the logits errs by at most 2 x 2^-8 relative; errors along the path add
    at most linearly, so the loss (a smooth function of the logits) and the gradient norm stay within
    2 (2L + 1) 2^-8 = 3.9 % of f32's for L = 2 layers, also after one AdamW update."""
    bound = 2 * (2 * 2 + 1) * BF16_EPS
    f32, bf16 = _two_steps("float32"), _two_steps("bfloat16")
    for a, b in zip(f32, bf16):
        assert abs(b["loss"] - a["loss"]) <= bound * a["loss"]
        assert abs(b["grad_norm"] - a["grad_norm"]) <= bound * a["grad_norm"]
    assert bf16[1]["loss"] < bf16[0]["loss"] and f32[1]["loss"] < f32[0]["loss"]  # both steps learned


CUDNN_FORWARD, CUDNN_BACKWARD = "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"  # XLA's custom-call targets


def _values_and_grads(kernel: str, mask: AttentionMask, g: jax.Array):
    """kernel(q, k, v) and the gradients of sum(out * g), jitted: heads-major [B, H, T, K] as meshlm's kernels take."""
    attend = attention.kernel(kernel)
    loss = lambda q, k, v: jnp.sum(attend(q, k, v, mask).astype(jnp.float32) * g.astype(jnp.float32))  # noqa: E731
    return jax.jit(lambda q, k, v: (attend(q, k, v, mask), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)))


@pytest.mark.parametrize("T", [128, 1024])
def test_the_fused_kernel_runs_cudnn_flash_attention_and_matches_reference(T):
    """meshlm's `fused` kernel on bf16 causal attention: its compiled program calls cuDNN's fused attention forward
    and backward (XLA's custom calls, read from the compiled HLO), and its outputs and gradients match the
    `reference` kernel's explicit einsums on the same inputs. The output is a convex combination of values ~ N(0, 1)
    rounded to bf16 (|error| <= 2^-8 x |output| <= 2^-8 x 4 at 4 sigma), plus the probabilities' bf16 rounding in
    each kernel: 2 x 4 x 2^-8 = 0.031 absolute."""
    B, H, K = 2, 8, 128
    q, k, v, g = (jax.random.normal(key, (B, H, T, K), jnp.bfloat16) for key in jax.random.split(jax.random.key(0), 4))
    mask = AttentionMask.causal(B, T)
    fused = _values_and_grads("fused", mask, g)
    program = fused.lower(q, k, v).compile().as_text()
    assert f'custom_call_target="{CUDNN_FORWARD}"' in program
    assert f'custom_call_target="{CUDNN_BACKWARD}"' in program
    (out_f, grads_f), (out_r, grads_r) = fused(q, k, v), _values_and_grads("reference", mask, g)(q, k, v)
    tol = 2 * 4 * BF16_EPS
    np.testing.assert_allclose(np.asarray(out_f, np.float32), np.asarray(out_r, np.float32), atol=tol)
    for grad_f, grad_r in zip(grads_f, grads_r):
        grad_f, grad_r = np.asarray(grad_f, np.float32), np.asarray(grad_r, np.float32)
        # Gradients sum over T positions: compare relative to their scale.
        assert np.max(np.abs(grad_f - grad_r)) <= tol * np.max(np.abs(grad_r))
