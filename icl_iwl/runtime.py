"""What a job builds from its config, built in one place.

    validate(config)                   # every check, before anything heavy
    rt = load(config)                  # mesh, rules, model, params on the mesh, tokenizer
    tr = trainer(config, rt)           # optimizer, compiled step, shardings, FLOPs
    sc = scorer(config, rt)            # the jitted multiple-choice scorer
    dec = decoder(config, rt)          # batched generation (icl_iwl/decode.py)

Every job, `icl_iwl.plan` and the benchmarks assemble runs through these
functions, so they cannot drift apart (`plan` compiles exactly the step that
training runs, and counts its FLOPs the same way).
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax

from icl_iwl import config_lib
from icl_iwl import errors
from icl_iwl.checkpoints import load as load_lib
from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.eval import scoring
from icl_iwl.model import build
from icl_iwl.model import gemma
from icl_iwl.model import lora
from icl_iwl.sharding import axes
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib
from icl_iwl.train import mfu
from icl_iwl.train import optim
from icl_iwl.train import state as state_lib
from icl_iwl.train import step as step_lib

ConfigDict = ml_collections.ConfigDict


def validate(config: ConfigDict) -> None:
  """`config_lib.validate` with this run's device count (mesh, batch)."""
  from icl_iwl import jobs  # pylint: disable=g-import-not-at-top
  try:
    jobs.JOBS.get(config.job)
  except errors.UserError as e:
    raise config_lib.ConfigError(f'config.job: {e}') from None
  config_lib.validate(config, jax.device_count())


@dataclasses.dataclass(frozen=True)
class Runtime:
  """A model on a mesh.

  params: on the mesh in the model's param dtype, or None (abstract: see
    `abstract`).
  tok: the checkpoint's tokenizer, or None if abstract.
  """

  config: ConfigDict
  mesh: jax.sharding.Mesh
  rules: rules_lib.Rules
  model: gemma.Transformer
  params: Any
  tok: tokenizer_lib.Tokenizer | None


def _mesh_and_rules(config: ConfigDict, model: gemma.Transformer, devices=None
                    ) -> tuple[jax.sharding.Mesh, rules_lib.Rules]:
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  return mesh, rules_lib.fit(config.rules, model.config, mesh)


def load(config: ConfigDict) -> Runtime:
  """Loads `config.model` (random init for 'random') and places it on the mesh."""
  model, params, tok = load_lib.load(config.model)
  mesh, rules = _mesh_and_rules(config, model)
  params = rules_lib.place_params(model, params, mesh, rules, config.seed)
  return Runtime(config, mesh, rules, model, params, tok)


def load_host(config: ConfigDict) -> tuple[Runtime, Any]:
  """(the runtime without device params, the params as host arrays or None
  for a random init): for training, which creates its state sharded."""
  model, params, tok = load_lib.load(config.model)
  mesh, rules = _mesh_and_rules(config, model)
  return Runtime(config, mesh, rules, model, None, tok), params


def abstract(config: ConfigDict, devices: list[jax.Device] | None = None) -> Runtime:
  """The model and mesh of `config` without weights or tokenizer (to plan),
  over `devices` (default: all)."""
  model = build.model(config.model)
  mesh, rules = _mesh_and_rules(config, model, devices)
  return Runtime(config, mesh, rules, model, None, None)


def scorer(config: ConfigDict, rt: Runtime, params: Any = None) -> scoring.Scorer:
  """The scorer of `config.scorer` for `rt`'s model (or other `params`)."""
  return scoring.Scorer(rt.model, rt.params if params is None else params, rt.tok,
                        scoring.ScorerConfig(**config.scorer), rt.mesh, rt.rules)


def decoder(config: ConfigDict, rt: Runtime, params: Any = None, **kwargs: Any):
  """The batched decoder (`decode.Decoder`, kwargs to it) for `rt`'s model
  (or other `params`)."""
  del config  # Decoding options are per call (`decode.Options`).
  from icl_iwl import decode  # pylint: disable=g-import-not-at-top
  return decode.Decoder(rt, params, **kwargs)


@dataclasses.dataclass(frozen=True)
class Trainer:
  """The training step of a config, compiled for its batch shape.

  run(state, local batch): one step on this process's rows, the loss gathered
    at target positions when they are few (`step.target_slots`).
  compile(slots): (state, batch) -> (state, metrics), the state donated,
    compiled ahead of time once per number of target slots per row (None:
    every position).
  step: `compile(None)`, the step that projects every position (what `plan`
    sizes).
  state_shardings / abstract_state: the train state's layout.
  batch_sharding: of the [B, L] batch arrays.
  flops(slots): model FLOPs of one step compiled for `slots` (6N per token,
    4N under LoRA, plus attention; see train/mfu.py).
  """

  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  trainable: state_lib.IsTrainable
  compile: Callable[[int | None], jax.stages.Compiled]
  abstract_state: state_lib.TrainState
  batch_sharding: jax.sharding.NamedSharding
  flops: Callable[[int | None], float]

  def create_state(self, rt: Runtime, base: Any, seed: int) -> state_lib.TrainState:
    """A fresh state on the mesh from pretrained host params (None: random)."""
    return state_lib.create(rt.model, self.optimizer, self.trainable, base,
                            rt.mesh, rt.rules, seed)

  def global_batch(self, local: dict[str, Any]) -> dict[str, jax.Array]:
    """This process's rows of a batch as global arrays on the mesh."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in local.items()}

  @property
  def step(self) -> jax.stages.Compiled:
    return self.compile(None)

  def run(self, state: state_lib.TrainState, local: dict[str, np.ndarray]
          ) -> tuple[state_lib.TrainState, dict[str, Any]]:
    """One step on this process's rows of a batch (the state donated); the
    metrics include the step's model FLOPs ('flops', a host float)."""
    slots = step_lib.target_slots(local)
    if jax.process_count() > 1:  # Every process runs the same program.
      every = multihost_utils.process_allgather(np.int32(slots or 0))
      slots = None if (every == 0).any() else int(every.max())
    state, metrics = self.compile(slots)(state, self.global_batch(local))
    return state, dict(metrics, flops=self.flops(slots))


def trainer(config: ConfigDict, rt: Runtime) -> Trainer:
  """Optimizer, trainable predicate and the step compiled ahead of time."""
  tc = config.train
  optimizer = optim.optimizer(tc)
  is_trainable = lora.trainable(rt.model.lora)
  compile_ = functools.cache(functools.partial(
      step_lib.compile_step, rt.model, optimizer, is_trainable, rt.mesh, rt.rules,
      tc.batch_size, tc.seq_len, tc.accum))
  return Trainer(
      optimizer=optimizer, schedule=optim.schedule(tc), trainable=is_trainable,
      compile=lambda slots: compile_(slots=slots),
      abstract_state=state_lib.sharded_abstract(rt.model, optimizer, is_trainable,
                                                rt.mesh, rt.rules),
      batch_sharding=jax.NamedSharding(rt.mesh, jax.P(dict(rt.rules).get(axes.BATCH))),
      flops=functools.partial(mfu.train_flops, rt.model.config, tc.batch_size,
                              tc.seq_len, frozen_weights=bool(config.model.lora.rank)))

