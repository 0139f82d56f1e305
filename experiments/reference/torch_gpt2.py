"""PyTorch GPT-2 training steps of meshlm's shape, the yardsticks for `meshlm bench train --against`.

Two references: Hugging Face's `GPT2LMHeadModel` (eager, SDPA attention) and a plain PyTorch GPT-2 written
here, so a surprise in one can be checked against the other. Both train with AdamW and global-norm clipping
like meshlm. torch is imported only when a reference is asked for.
"""

import math
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from meshlm.experiments.convert import gpt2_layout
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.training.config import OptimizerConfig

REFERENCES = ("hf-gpt2", "torch-gpt2")
GPT2_SHAPE = dict(norm="layernorm", position="learned", mlp="gelu", bias=True, tie_embeddings=True, qk_norm=False)


def _torch():
    try:
        import torch
    except ImportError:
        raise ConfigError("--against needs PyTorch: pip install 'meshlm[torch]'") from None
    return torch


def check(name: str, cfg: ModelConfig) -> None:
    if name not in REFERENCES:
        raise ConfigError(f"unknown reference {name!r}; choose one of: {', '.join(REFERENCES)}")
    wrong = {k: getattr(cfg, k) for k, v in GPT2_SHAPE.items() if getattr(cfg, k) != v}
    if wrong or cfg.dtype != "float32" or cfg.dropout:
        raise ConfigError(
            f"--against {name} compares GPT-2-shaped f32 models without dropout; this config has "
            f"{wrong or 'dtype/dropout set'}"
        )
    _torch()


def make_step(
    name: str, cfg: ModelConfig, opt: OptimizerConfig, batch: int, seq_len: int, seed: int = 0
) -> Callable[[], float]:
    """A function that runs one training step on a fixed random batch and returns its loss."""
    check(name, cfg)
    torch = _torch()
    torch.manual_seed(seed)
    model, forward = _hf_model(torch, cfg) if name == "hf-gpt2" else _plain_model(torch, cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [dict(params=decay, weight_decay=opt.weight_decay), dict(params=no_decay, weight_decay=0.0)],
        lr=opt.peak_lr,
        betas=(opt.b1, opt.b2),
        eps=opt.eps,
    )
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), generator=torch.Generator().manual_seed(seed))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step() -> float:
        logits = forward(inputs)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        loss.backward()
        if opt.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def numpy_params(model) -> dict:
    """An nnx Transformer's parameters as a nested dict of numpy arrays (what the GPT-2 layout converts)."""
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _hf_model(torch, cfg: ModelConfig):
    model = hf_gpt2(cfg, use_cache=False).train()
    return model, lambda inputs: model(input_ids=inputs).logits


def hf_gpt2(cfg: ModelConfig, params: dict | None = None, use_cache: bool = True):
    """Hugging Face's GPT2LMHeadModel of cfg's shape (f32, no dropout), in eval mode; with `params` (meshlm's
    parameter dict) it holds meshlm's weights, so both compute the same function."""
    check("hf-gpt2", cfg)
    torch = _torch()
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        raise ConfigError("--against hf-gpt2 needs Hugging Face transformers: pip install 'meshlm[torch]'") from None
    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.n_ctx,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=cfg.mlp_dim,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=cfg.norm_eps,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=use_cache,
        attn_implementation="sdpa",
    )
    model = GPT2LMHeadModel(hf_cfg).eval()
    if params is not None:
        tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in gpt2_layout.to_hf(params, cfg).items()}
        missing, unexpected = model.transformer.load_state_dict(tensors, strict=False)
        if unexpected or [k for k in missing if not k.endswith(gpt2_layout.IGNORED_SUFFIXES)]:
            raise ConfigError(f"meshlm's GPT-2 layout and transformers disagree: {missing} {unexpected}")
    return model


def _plain_model(torch, cfg: ModelConfig):
    nn, F = torch.nn, torch.nn.functional
    D, H, L = cfg.d_model, cfg.n_heads, cfg.n_layers

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(D, eps=cfg.norm_eps), nn.LayerNorm(D, eps=cfg.norm_eps)
            self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
            self.fc, self.out = nn.Linear(D, cfg.mlp_dim), nn.Linear(cfg.mlp_dim, D)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT2(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(cfg.vocab_size, D), nn.Embedding(cfg.n_ctx, D)
            self.blocks, self.ln_f = nn.ModuleList(Block() for _ in range(L)), nn.LayerNorm(D, eps=cfg.norm_eps)
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = (
                        cfg.init_std / math.sqrt(2 * L)
                        if name.endswith(("proj.weight", "out.weight"))
                        else cfg.init_std
                    )
                    nn.init.normal_(p, 0.0, std)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.ln_f(x) @ self.wte.weight.T  # tied output head

    model = GPT2().train()
    return model, model
