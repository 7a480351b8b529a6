"""The train state, created directly in its sharded layout.

Params are split into the trained part and a frozen part (the base model
under LoRA; empty for full fine-tuning). Shardings come from the params'
logical axes (optimizer moments inherit them), through the rules.
"""

from typing import Any, Callable

import flax
from flax import linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from icl_iwl.model import gemma
from icl_iwl.sharding import rules as rules_lib

IsTrainable = Callable[[str], bool]  # '/'-joined param path -> trained?


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer updates done.
  params: Any  # Trained params.
  frozen: Any  # Params held fixed ({} for full fine-tuning).
  opt_state: Any


def split(params: Any, is_trainable: IsTrainable) -> tuple[dict, dict]:
  """(trained, frozen) nested dicts of `params`."""
  flat = traverse_util.flatten_dict(params, sep='/')
  trained = {k: v for k, v in flat.items() if is_trainable(k)}
  frozen = {k: v for k, v in flat.items() if not is_trainable(k)}
  return (traverse_util.unflatten_dict(trained, sep='/'),
          traverse_util.unflatten_dict(frozen, sep='/'))


def merge(trained: dict, frozen: dict) -> dict:
  """The full param tree from its two parts."""
  flat = traverse_util.flatten_dict(frozen, sep='/')
  flat.update(traverse_util.flatten_dict(trained, sep='/'))
  return traverse_util.unflatten_dict(flat, sep='/')


def abstract(model: gemma.Transformer, optimizer: optax.GradientTransformation,
             is_trainable: IsTrainable, boxed: bool = False) -> TrainState:
  """ShapeDtypeStructs of the state (boxed with logical axes, if asked)."""
  trained, frozen = split(gemma.abstract_params(model), is_trainable)
  state = TrainState(jax.ShapeDtypeStruct((), jnp.int32), trained, frozen,
                     jax.eval_shape(optimizer.init, trained))
  return state if boxed else nn.unbox(state)


def shardings(model: gemma.Transformer, optimizer: optax.GradientTransformation,
              is_trainable: IsTrainable, mesh: jax.sharding.Mesh,
              rules: rules_lib.Rules) -> TrainState:
  """NamedShardings of every state leaf."""
  specs = nn.get_partition_spec(abstract(model, optimizer, is_trainable, boxed=True))
  specs = jax.tree.map(lambda s: jax.P() if s is None else s, specs,
                       is_leaf=lambda s: s is None or isinstance(s, jax.P))
  return rules_lib.shardings(specs, mesh, rules)


def sharded_abstract(model: gemma.Transformer,
                     optimizer: optax.GradientTransformation,
                     is_trainable: IsTrainable, mesh: jax.sharding.Mesh,
                     rules: rules_lib.Rules) -> TrainState:
  """ShapeDtypeStructs of the state carrying their shardings (to compile for,
  or to restore into)."""
  return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      abstract(model, optimizer, is_trainable),
      shardings(model, optimizer, is_trainable, mesh, rules))


def create(model: gemma.Transformer, optimizer: optax.GradientTransformation,
           is_trainable: IsTrainable, base: Any, mesh: jax.sharding.Mesh,
           rules: rules_lib.Rules, seed: int) -> TrainState:
  """A fresh state on the mesh.

  Args:
    model, optimizer, is_trainable: what is trained, and how.
    base: pretrained params (host arrays; missing leaves such as LoRA factors
      are initialized), or None for a random init.
    mesh, rules: the layout.
    seed: init seed.
  """
  target = shardings(model, optimizer, is_trainable, mesh, rules)
  param_target = rules_lib.param_shardings(model, mesh, rules)
  flat_base = traverse_util.flatten_dict(base or {}, sep='/')
  flat_target = traverse_util.flatten_dict(param_target, sep='/')
  base = {k: jax.device_put(np.asarray(v, model.param_dtype), flat_target[k])
          for k, v in flat_base.items()}

  def init(rng, base):
    flat = traverse_util.flatten_dict(gemma.init_params(model, rng), sep='/')
    flat.update(base)
    trained, frozen = split(traverse_util.unflatten_dict(flat, sep='/'), is_trainable)
    return TrainState(jnp.zeros((), jnp.int32), trained, frozen,
                      optimizer.init(trained))

  return jax.jit(init, out_shardings=target)(jax.random.key(seed), base)
