"""Scanned layers: the same model as the per-layer one, in every layout use.

The per-layer `Transformer` is the reference (its logits match transformers,
test_gemma3_270m.py); the scanned one must give the same logits, keys and
values (with and without memory), gradients, LoRA adapters and merges, and
checkpoints must load across the two layouts.
"""

import dataclasses
import pathlib

from flax import linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_iwl import config_lib
from icl_iwl.checkpoints import load
from icl_iwl.checkpoints import manager
from icl_iwl.model import build
from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.model import lora
from icl_iwl.model import presets
from icl_iwl.model import scan
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib
from icl_iwl.train import optim
from icl_iwl.train import state as state_lib

_FINETUNE = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'finetune.py'
_G, _L = presets.AttentionType.GLOBAL, presets.AttentionType.LOCAL


def _family(name: str) -> presets.GemmaConfig:
  """Tiny Gemma 1 / 2 / 3 architectures (small vocabulary, window 4)."""
  tiny = dataclasses.replace(presets.get('tiny'), vocab_size=512, sliding_window=4)
  if name == 'gemma1':  # All global, K == N (one qkv_einsum), no post norms.
    return dataclasses.replace(
        tiny, name=name, attention_types=(_G,) * 3, num_kv_heads=2, use_post_norms=False,
        use_qk_norm=False, transpose_gating_einsum=False, sliding_window=None)
  if name == 'gemma2':  # Local/global alternating, soft caps.
    return dataclasses.replace(
        tiny, name=name, attention_types=(_L, _G) * 2, use_qk_norm=False,
        attn_logit_softcap=50.0, final_logit_softcap=30.0, transpose_gating_einsum=False)
  # 5 local : 1 global, then two local layers: the types differ by layer.
  return dataclasses.replace(tiny, name=name, attention_types=((_L,) * 5 + (_G,)) + (_L,) * 2)


_FAMILIES = ('gemma1', 'gemma2', 'gemma3')


def _inputs(b: int = 2, t: int = 10, offset: int = 0):
  tokens = jax.random.randint(jax.random.key(1), (b, t), 0, 512)
  positions = jnp.broadcast_to(jnp.arange(t) + offset, (b, t))
  segments = jnp.ones((b, t), jnp.int32).at[1, -3:].set(0)  # Some padding.
  return tokens, positions, cache.causal_mask(segments)


@pytest.mark.parametrize('family', _FAMILIES)
def test_stack_gives_the_scanned_models_tree_and_unstack_inverts_it(family):
  config = _family(family)
  per_layer = gemma.init_params(gemma.Transformer(config), jax.random.key(0))
  stacked = scan.stack(per_layer, config)
  abstract = nn.unbox(gemma.abstract_params(gemma.Transformer(config, scan_layers=True)))
  shapes = lambda tree: {k: v.shape for k, v in traverse_util.flatten_dict(  # noqa: E731
      tree, sep='/').items()}
  assert shapes(stacked) == shapes(abstract)
  np.testing.assert_array_equal(
      stacked['layers']['mlp']['linear'][2], per_layer['layer_2']['mlp']['linear'])
  round_trip = scan.unstack(stacked, config)
  assert jax.tree.structure(round_trip) == jax.tree.structure(per_layer)
  for x, y in zip(jax.tree.leaves(round_trip), jax.tree.leaves(per_layer)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('family, remat', [  # Each family, each remat choice.
    ('gemma1', 'none'), ('gemma2', 'full'), ('gemma3', 'save_dots')])
def test_scanned_logits_and_kv_equal_the_per_layer_models(family, remat):
  config = _family(family)
  reference = jax.jit(gemma.Transformer(config).apply)
  scanned = jax.jit(gemma.Transformer(config, scan_layers=True, remat=remat).apply)
  params = gemma.init_params(gemma.Transformer(config), jax.random.key(0))
  stacked = scan.stack(params, config)
  tokens, positions, mask = _inputs()
  want, want_kv = reference({'params': params}, tokens, positions, mask)
  got, got_kv = scanned({'params': stacked}, tokens, positions, mask)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  for k in ('k', 'v'):
    assert got_kv[k].shape == (config.num_layers, 2, 10, config.num_kv_heads, config.head_dim)
    np.testing.assert_allclose(got_kv[k], want_kv[k], atol=1e-5, rtol=1e-5)
  # Continuations attending to a memory: per-row (M = B), shared (M = 1), and
  # both in sequence (the decoder's shared prefix, then its own cache).
  memory = cache.from_kv(want_kv, positions, mask[:, -1])
  shared = jax.tree.map(lambda x: x[:1] if x.ndim == 2 else x[:, :1], memory)
  # Two tokens: a local layer attends to a gathered window of 4 + 2 - 1 of
  # the memory's 10 slots (`Attention`), under the scanned `local` flag too.
  for t in (10, 2):
    more, more_pos, more_mask = _inputs(t=t, offset=10)
    for mem in (memory, shared, (shared, memory)):
      want, _ = reference({'params': params}, more, more_pos, more_mask, mem)
      got, _ = scanned({'params': stacked}, more, more_pos, more_mask, mem)
      np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def _loss(model, params):
  tokens, positions, mask = _inputs()
  logits, _ = model.apply({'params': params}, tokens, positions, mask)
  return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * jnp.arange(10.0)[None])


@pytest.mark.parametrize('family', _FAMILIES)
def test_scanned_gradients_equal_the_per_layer_models(family):
  config = _family(family)
  params = gemma.init_params(gemma.Transformer(config), jax.random.key(0))
  grad = lambda model: jax.jit(jax.grad(lambda p: _loss(model, p)))  # noqa: E731
  want = grad(gemma.Transformer(config))(params)
  got = grad(gemma.Transformer(config, scan_layers=True, remat='full'))(
      scan.stack(params, config))
  got = scan.unstack(got, config)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-4, err_msg=jax.tree_util.keystr(path))


def test_stacked_params_shard_like_their_layers_with_an_unsharded_layer_axis():
  config = _family('gemma3')
  mesh = mesh_lib.make_mesh((('data', 1), ('fsdp', 8), ('tensor', 1)))
  rules = rules_lib.fit(config_lib.base('train').rules, config, mesh)
  per_layer = rules_lib.param_shardings(gemma.Transformer(config), mesh, rules)
  scanned = rules_lib.param_shardings(gemma.Transformer(config, scan_layers=True), mesh, rules)
  q = scanned['layers']['attn']['q_einsum']['w'].spec
  assert tuple(q) == (None, *per_layer['layer_2']['attn']['q_einsum']['w'].spec)
  assert 'fsdp' in tuple(q)


def _lora_models(config):
  adapters = lora.LoraConfig(rank=4, alpha=8.0)
  return (gemma.Transformer(config, lora=adapters),
          gemma.Transformer(config, lora=adapters, scan_layers=True, remat='full'))


def _with_nonzero_adapters(params):
  flat = traverse_util.flatten_dict(params, sep='/')
  for i, key in enumerate(sorted(flat)):
    if lora.is_adapter(key):
      flat[key] = jax.random.normal(jax.random.key(i), flat[key].shape) * 0.1
  return traverse_util.unflatten_dict(flat, sep='/')


def test_lora_on_scanned_layers_trains_only_adapters_and_merges_the_same():
  config = _family('gemma3')
  plain, scanned = _lora_models(config)
  params = _with_nonzero_adapters(gemma.init_params(plain, jax.random.key(0)))
  stacked = scan.stack(params, config)
  trained, frozen = state_lib.split(stacked, lora.trainable(scanned.lora))
  names = list(traverse_util.flatten_dict(trained, sep='/'))
  assert names and all(lora.is_adapter(n) for n in names)
  # q, kv, attn_vec, gating, linear x 2, each stacked over the layers.
  assert len(names) == 2 * 5
  assert all(trained['layers']['attn']['q_einsum'][k].shape[0] == config.num_layers
             for k in ('w_lora_a', 'w_lora_b'))
  grads = jax.jit(jax.grad(lambda t: _loss(scanned, state_lib.merge(t, frozen))))(trained)
  plain_trained, plain_frozen = state_lib.split(params, lora.trainable(plain.lora))
  want = jax.jit(jax.grad(lambda t: _loss(plain, state_lib.merge(t, plain_frozen))))(
      plain_trained)
  got = scan.unstack(grads, config)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-4)
  merged = scan.unstack(lora.merge(scanned, stacked), config)
  want_merged = lora.merge(plain, params)
  assert jax.tree.structure(merged) == jax.tree.structure(want_merged)
  for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(want_merged)):
    np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-6)


def _state(model, seed):
  """(A train state of random values, every param and moment; its sharded abstract)."""
  mesh = mesh_lib.make_mesh((('data', 1), ('fsdp', 8), ('tensor', 1)))
  rules = rules_lib.fit(config_lib.base('train').rules, model.config, mesh)
  optimizer = optim.optimizer(config_lib.train())
  abstract = state_lib.sharded_abstract(model, optimizer, lora.trainable(None), mesh, rules)
  # Random values on the host, placed as the state's shardings say: the test
  # needs values that differ leaf by leaf, not an init (a compile of ~15 s).
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda x: jax.device_put(
      rng.standard_normal(x.shape, np.float32).astype(x.dtype) if x.ndim
      else np.zeros((), x.dtype), x.sharding), abstract)
  return state, abstract


def test_an_orbax_checkpoint_of_either_layout_restores_into_the_other(tmp_path):
  config = _family('gemma3')
  models = {s: gemma.Transformer(config, scan_layers=s) for s in (False, True)}
  states = {s: _state(models[s], seed=3 + s) for s in (False, True)}
  # Optimizer moments are converted too: per-layer names in the checkpoint.
  assert any('opt_state' in name and 'layer_7' in name
             for name in manager._by_name(states[False][1]))  # pylint: disable=protected-access
  for save_scanned in (False, True):
    saved, load_scanned = states[save_scanned][0], not save_scanned
    ckpt = manager.Checkpointer(tmp_path / str(save_scanned), async_save=False)
    ckpt.save(1, saved, {'next': 7})
    flat_saved = manager._by_name(jax.tree.map(np.asarray, saved))  # pylint: disable=protected-access
    abstract = states[load_scanned][1]
    state, data = ckpt.restore(abstract, config=config)
    assert data == {'next': 7}
    got = manager._by_name(state)  # pylint: disable=protected-access
    convert = scan.stack_flat if load_scanned else scan.unstack_flat
    want = convert(flat_saved, config)
    assert sorted(got) == sorted(want)
    for name, leaf in got.items():
      assert leaf.sharding == manager._by_name(abstract)[name].sharding, name  # pylint: disable=protected-access
      np.testing.assert_array_equal(np.asarray(leaf), want[name], err_msg=name)
    ckpt.close()


def test_a_checkpoint_of_the_old_grouped_scan_restores_into_either_layout(tmp_path):
  """Before f6f0d8b, scanned layers were saved in groups: the gemma3 family's
  8 layers (5 local, 1 global, 2 local) as stack_0/layer_0..5 [1 group] and
  stack_1/layer_0 [2 groups: layers 6 and 7]."""
  config = _family('gemma3')
  layer = lambda i: np.full((3,), i, np.float32)  # noqa: E731
  grouped = {'params': {'stack_0': {f'layer_{j}': {'w': layer(j)[None]} for j in range(6)},
                        'stack_1': {'layer_0': {'w': np.stack([layer(6), layer(7)])}},
                        'embedder': {'e': np.ones((2,), np.float32)}}}
  per_layer = {'params/embedder/e': np.ones((2,), np.float32),
               **{f'params/layer_{i}/w': layer(i) for i in range(8)}}
  scanned = {'params/embedder/e': np.ones((2,), np.float32),
             'params/layers/w': np.stack([layer(i) for i in range(8)])}
  assert [scan.layout_flat(f) for f in (per_layer, scanned)] == ['per_layer', 'scanned']
  ckpt = manager.Checkpointer(tmp_path, async_save=False)
  ckpt.save(1, grouped, {'next': 2})
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  for want in (per_layer, scanned):
    abstract = traverse_util.unflatten_dict(
        {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device) for k, v in want.items()},
        sep='/')
    state, data = ckpt.restore(abstract, config=config)
    got = manager._by_name(state)  # pylint: disable=protected-access
    assert data == {'next': 2} and sorted(got) == sorted(want)
    for name, value in want.items():
      np.testing.assert_array_equal(np.asarray(got[name]), value, err_msg=name)
  ckpt.close()


def test_a_scanned_runs_weights_load_into_either_layout(tmp_path):
  """'run:WORKDIR' of a run trained with scanned layers, as test_load_run.py
  writes one: its weights load per layer (gemma names) and scanned."""
  config = config_lib.load_file(f'{_FINETUNE}:reversals,tiny')
  config.model.scan_layers = True
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2) + '\n')
  model = build.model(config.model)
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  rules = rules_lib.fit(config.rules, model.config, mesh)
  state = state_lib.create(model, optim.optimizer(config.train), lora.trainable(None),
                           None, mesh, rules, seed=5)
  ckpt = manager.Checkpointer(workdir / 'checkpoints', async_save=False)
  ckpt.save(1, state, {'next': 1})
  ckpt.close()
  want = scan.unstack(jax.tree.map(np.asarray, state.params), model.config)
  for scan_layers in (False, True):
    model_config = config_lib.model('tiny', f'run:{workdir}')
    model_config.scan_layers = scan_layers
    loaded, params, _ = load.load(model_config)
    assert loaded.scan_layers == scan_layers == scan.is_stacked(params)
    got = scan.unstack(params, model.config) if scan_layers else params
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(x, y)


def test_per_device_memory_of_the_planned_step_falls_as_fsdp_grows():
  """`plan` (the compiled train step's memory analysis) on 4 and 8 fake
  devices: the sharded state halves and so do the temporaries per device."""
  from icl_iwl import plan  # pylint: disable=g-import-not-at-top
  config = config_lib.load_file(f'{_FINETUNE}:reversals,tiny')
  config.model.update(scan_layers=True, remat='full')
  config.train.update(batch_size=8, seq_len=64)
  got = {}
  for fsdp in (4, 8):
    config.mesh = (('data', 1), ('fsdp', fsdp), ('tensor', 1))
    got[fsdp] = plan.plan(config, jax.devices()[:fsdp])['per_device']
  # Params, Adam's two moments: 3 f32 copies of the weights over the devices.
  shapes = nn.unbox(gemma.abstract_params(build.model(config.model)))
  state_bytes = 3 * 4 * sum(x.size for x in jax.tree.leaves(shapes))
  for fsdp in (4, 8):
    assert got[fsdp]['arguments_gib'] * 2**30 == pytest.approx(state_bytes / fsdp, rel=0.05)
  assert got[8]['temporaries_gib'] < 0.75 * got[4]['temporaries_gib']
  assert got[8]['peak_gib'] < 0.75 * got[4]['peak_gib']


@pytest.mark.parametrize('words', ['', ',lora'])
def test_no_device_holds_the_whole_output_table(words):
  """FSDP 8: the compiled step's per-device program never has a buffer of
  the [V, D] embedding table's full shape (gathered for the output
  projection, or its gradient), only [V / 8, D] rows (`layers.output_sharded`)."""
  from icl_iwl import runtime  # pylint: disable=g-import-not-at-top
  config = config_lib.load_file(f'{_FINETUNE}:reversals,tiny{words}')
  config.model.update(scan_layers=True, remat='full')
  config.train.update(batch_size=8, seq_len=64)
  config.mesh = (('data', 1), ('fsdp', 8), ('tensor', 1))
  text = runtime.trainer(config, runtime.abstract(config, jax.devices()[:8])).step.as_text()
  v, d = presets.get(config.model.preset).vocab_size, presets.get(config.model.preset).embed_dim
  assert f'f32[{v // 8},{d}]' in text
  assert f'[{v},{d}]' not in text
