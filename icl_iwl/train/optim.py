"""AdamW with linear warmup then cosine or constant learning rate, clipping."""

import jax
import jax.numpy as jnp
import ml_collections
import optax

ADAM_EPS = 1e-8  # Not a config field; benchmarks/train_step.py gives it to torch too.


def schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then 'cosine' (down to
  `final_lr_fraction` of it at `steps`) or 'constant'."""
  lr, warmup = config.learning_rate, config.warmup_steps
  if config.schedule == 'constant':
    after = optax.constant_schedule(lr)
  elif config.schedule == 'cosine':
    after = optax.cosine_decay_schedule(lr, max(1, config.steps - warmup),
                                        alpha=config.final_lr_fraction)
  else:
    raise ValueError(f"train.schedule must be 'cosine' or 'constant', "
                     f'not {config.schedule!r}.')
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after],
                              [warmup])


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """Scales all gradients by min(1, max_norm / their global norm), as
  optax.clip_by_global_norm (same empty state) but with one scalar division
  and a per-element multiply, which XLA fuses into the AdamW update instead
  of materializing a clipped params-sized tree (optax divides per element);
  it is also torch's `clip_grad_norm_` formula."""

  def update(updates, state, params=None):
    del params
    scale = jnp.minimum(1.0, max_norm / optax.global_norm(updates))
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

  return optax.GradientTransformation(optax.init_empty_state, update)


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW; weight decay only on matrices."""
  return optax.chain(
      clip_by_global_norm(config.grad_clip),
      optax.adamw(schedule(config), b1=config.b1, b2=config.b2, eps=ADAM_EPS,
                  weight_decay=config.weight_decay,
                  mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params)),
  )
