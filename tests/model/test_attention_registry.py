"""The two registries: discovery of the folder, lookup by import path, `auto`, and the errors that name the fix."""

import dataclasses
import pathlib
import re
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from meshlm.model import attention
from meshlm.model.attention import AttentionMask
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import Transformer
from tests.model.helpers import TINY


def test_every_module_of_the_folder_is_imported_by_a_lookup():
    attention.kernel_names()
    folder = pathlib.Path(attention.__file__).parent
    for path in folder.glob("*.py"):
        assert f"meshlm.model.attention.{path.stem}" in sys.modules or path.stem == "__init__", path


def test_builtin_variants_are_registered():
    assert {"reference", "blocked", "blockwise", "fused", "splash", "pallas_flash", "linear", "softcap"} <= set(
        attention.kernel_names()
    )
    assert {"mha", "gqa", "sliding_window", "gpt3_sparse", "mla"} <= set(attention.layer_names())


def test_a_kernel_in_a_users_package_is_named_by_its_import_path():
    fn = attention.kernel("tests.model.user_attention.doubled_values")
    q, k, v = (jax.random.normal(jax.random.key(i), (1, 2, 5, 4)) for i in range(3))
    mask = AttentionMask.causal(1, 5)
    np.testing.assert_allclose(fn(q, k, v, mask), 2 * attention.kernel("reference")(q, k, v, mask), rtol=1e-6)
    attention.check(dataclasses.replace(TINY, attention="tests.model.user_attention.doubled_values"))


def test_auto_picks_the_platforms_kernel():
    assert attention.kernel("auto") is attention.kernel(attention.AUTO[jax.default_backend()])


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(attention="nope"), "unknown attention variant 'nope'; set model.attention to one of: .*reference"),
        (dict(attention_layer="nope"), "unknown attention variant 'nope'; set model.attention_layer to one of: .*mha"),
        (dict(attention="no_such_pkg.kernel"), "cannot import it"),
        (dict(attention="meshlm.model.attention.mask"), "registers 0 attention kernels, not one"),
        (dict(attention_layer="gqa", n_kv_heads=3), "n_kv_heads=3 does not divide model.n_heads=4"),
        (dict(n_kv_heads=2), "needs a grouped-query layer; set model.attention_layer=gqa"),
        (dict(attention_layer="sliding_window"), "needs model.attention_window=W"),
        (dict(attention_layer="gpt3_sparse", attention_window=4, attention_pattern="dense,strided"), "dense,local"),
        (dict(attention_layer="mla", qk_norm=True), "set model.qk_norm=false"),
        (dict(attention_layer="mla", position="rotary", mla_rope_dim=3), "mla_rope_dim=3 must be even"),
        (dict(position="alibi", attention="linear"), "no logits to add ALiBi's bias to"),
    ],
)
def test_invalid_attention_configs_fail_with_the_fix(changes, message):
    with pytest.raises(ConfigError, match=message):
        attention.check(dataclasses.replace(TINY, **changes).validate())


def test_the_model_checks_the_attention_names_in_full():
    names = ", ".join(attention.kernel_names())
    message = (
        f"unknown attention variant 'nope'; set model.attention to one of: {names} "
        "(or to the import path of a module that registers an attention kernel)"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        attention.check(dataclasses.replace(TINY, attention="nope"))
    with pytest.raises(ConfigError, match=re.escape(message)):
        Transformer(dataclasses.replace(TINY, attention="nope"), nnx.Rngs(0))
