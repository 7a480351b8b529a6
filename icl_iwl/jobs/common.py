"""What every job sets up from its config: mesh, rules, model, params."""

import dataclasses
from typing import Any

import jax
import ml_collections

from icl_iwl.checkpoints import load
from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.model import gemma
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib


@dataclasses.dataclass(frozen=True)
class Setup:
  mesh: jax.sharding.Mesh
  rules: rules_lib.Rules
  model: gemma.Transformer
  params: Any  # On the mesh.
  tok: tokenizer_lib.Tokenizer


def setup(config: ml_collections.ConfigDict) -> Setup:
  """Mesh, fitted sharding rules, model, params placed on the mesh, tokenizer."""
  mesh = mesh_lib.make_mesh(config.mesh)
  model, params, tok = load.load(config.model)
  rules = rules_lib.fit(config.rules, model.config, mesh)
  params = rules_lib.place_params(model, params, mesh, rules, config.seed)
  return Setup(mesh, rules, model, params, tok)
