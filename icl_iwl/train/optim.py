"""AdamW with linear warmup then cosine or constant learning rate, clipping."""

import jax
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


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW; weight decay only on matrices."""
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip),
      optax.adamw(schedule(config), b1=config.b1, b2=config.b2, eps=ADAM_EPS,
                  weight_decay=config.weight_decay,
                  mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params)),
  )
