"""The batched decoder against step-by-step argmax over full forward passes,
and (real_model) against transformers' greedy `generate`."""

import copy
import dataclasses
import functools
import re
from unittest import mock

from flax import linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_iwl import decode
from icl_iwl import runtime
from icl_iwl.data import tokenizer
from icl_iwl.model import cache as cache_lib
from icl_iwl.model import gemma
from icl_iwl.model import lora as lora_lib
from icl_iwl.model import presets
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib
from test_scoring import reference_logp  # pylint: disable=g-bad-import-order

_L, _G = presets.AttentionType.LOCAL, presets.AttentionType.GLOBAL
# Tiny variants of the three generations (sliding window 16 where local).
_VARIANTS = {
    'gemma3': {},
    'gemma2': dict(attn_logit_softcap=5.0, final_logit_softcap=3.0,
                   use_qk_norm=False, transpose_gating_einsum=False),
    'gemma1': dict(attention_types=(_G, _G), num_kv_heads=2,
                   use_post_norms=False, use_qk_norm=False),
}
_PREFIX = ('Femp are more dangerous than glon. Troff are bigger than yomp. '
           'Glon are smaller than femp.\n')
_PROMPTS = (
    'The capital of France is',
    '',  # Continues the prefix (or BOS) itself.
    'A much longer prompt, longer than the sliding window of sixteen tokens '
    'and than one prefill chunk, so that it is prefilled in several chunks',
    '2 + 2 =',
    'glon are',
)


# One variant's runtime and two decoders at a time: each holds the tiny model's
# params on the 8 devices (the 262k-row embedding: ~0.5 GB a copy).
def _tiny_model(variant: str, **kwargs) -> gemma.Transformer:
  config = dataclasses.replace(presets.get('tiny'), **_VARIANTS[variant])
  return gemma.Transformer(config, **kwargs)


@functools.lru_cache(maxsize=1)
def _runtime(variant: str = 'gemma3') -> runtime.Runtime:
  model = _tiny_model(variant)

  @jax.jit
  def init():
    # Random weights of scale 1 and small embeddings: the blocks outweigh a
    # token's own embedding, so greedy continuations do not repeat one token.
    params = gemma.init_params(model, jax.random.key(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [
        x + jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
    embedder = params['embedder']
    return dict(params, embedder=dict(
        embedder, input_embedding=0.02 * embedder['input_embedding']))

  params = init()
  mesh = mesh_lib.make_mesh(mesh_lib.DEFAULT_MESH)  # 8 rows over 8 devices.
  return runtime.Runtime(None, mesh, rules_lib.DEFAULT_RULES, model, params,
                         tokenizer.load_default())


@functools.lru_cache(maxsize=2)
def _decoder(variant: str = 'gemma3', **kwargs) -> decode.Decoder:
  return decode.Decoder(_runtime(variant), prefill_chunk=16, **kwargs)


def _greedy_by_hand(rt: runtime.Runtime, prompt: str, prefix: str,
                    n: int) -> list[int]:
  """Greedy by hand: a full forward over BOS + prefix + prompt + the tokens
  so far for every new token, argmax at the last position."""
  ids = rt.tok.encode(prefix, add_bos=True) + rt.tok.encode(prompt)
  new = []
  for _ in range(n):
    logp = reference_logp(ids, [len(ids) - 1], rt.model, rt.params)
    new.append(int(logp[0].argmax()))
    ids = ids + new[-1:]
  return new


def _text(tok, ids: list[int]) -> str:
  if tok.eos_id in ids:
    ids = ids[:ids.index(tok.eos_id)]
  return tok.decode(ids)


@pytest.mark.parametrize('variant, prefix', [
    ('gemma3', ''), ('gemma2', _PREFIX), ('gemma1', _PREFIX),
], ids=['gemma3', 'gemma2_prefix', 'gemma1_prefix'])
def test_greedy_equals_step_by_step_argmax_over_full_forward_passes(variant, prefix):
  n = 12
  decoder = _decoder(variant)
  tok = decoder.tok
  got = decoder.generate(_PROMPTS, decode.Options(max_new_tokens=n), prefix=prefix)
  assert len(tok.encode(_PROMPTS[2])) > decoder.prefill_chunk  # Two chunks.
  for prompt, completion in zip(_PROMPTS, got):
    want = _greedy_by_hand(_runtime(variant), prompt, prefix, n)
    assert len(set(want)) > 2, want  # A continuation worth comparing.
    assert completion == _text(tok, want), prompt


def _param_shapes(model: gemma.Transformer) -> dict[str, jax.ShapeDtypeStruct]:
  return traverse_util.flatten_dict(nn.unbox(gemma.abstract_params(model)), sep='/')


@pytest.mark.unit
@pytest.mark.parametrize('variant, lora', [
    ('gemma3', False), ('gemma3', True), ('gemma2', False), ('gemma1', False)])
def test_the_decode_loop_gets_each_weight_in_its_loop_layout(variant, lora):
  model = _tiny_model(variant, lora=lora_lib.LoraConfig(rank=4) if lora else None)
  config = model.config
  shapes = _param_shapes(model)
  # Each weight's axis that leads in the loop, by its size (unique in the
  # tiny model); LoRA factors keep their layout.
  leading = {'q_einsum/w': config.embed_dim, 'kv_einsum/w': config.embed_dim,
             'qkv_einsum/w': config.embed_dim, 'gating_einsum': config.embed_dim,
             'attn_vec_einsum/w': config.head_dim}
  values, want, owners = {}, {}, []
  for name, s in shapes.items():
    x = np.arange(np.prod(s.shape), dtype=np.float32).reshape(s.shape)
    values[name], want[name] = x, x
    owner = next((o for o in leading if name.endswith('/' + o)), None)
    axis = [i for i, n in enumerate(s.shape) if n == leading.get(owner)]
    if owner and axis != [0]:
      want[name] = np.moveaxis(x, axis[0], 0)
      owners.append(owner)
  there = decode._permute(model, traverse_util.unflatten_dict(values, sep='/'))  # pylint: disable=protected-access
  for name, x in traverse_util.flatten_dict(there, sep='/').items():
    np.testing.assert_array_equal(x, want[name], err_msg=name)
  back = decode._permute(model, there, inverse=True)  # pylint: disable=protected-access
  for name, x in traverse_util.flatten_dict(back, sep='/').items():
    np.testing.assert_array_equal(x, values[name], err_msg=name)
  projections = ['qkv_einsum/w'] if 'qkv_einsum/w' in owners else ['q_einsum/w', 'kv_einsum/w']
  assert sorted(owners) == sorted(
      config.num_layers * [*projections, 'gating_einsum', 'attn_vec_einsum/w'])
  # A scanned model keeps its layout (see decode._loop_perms).
  assert not decode._loop_perms(_tiny_model(variant, scan_layers=True))  # pylint: disable=protected-access


def _dims(shape) -> tuple[int, ...]:
  """A shape's dims other than 1, sorted: the same for any transpose of it
  (and for a weight whose heads axis of size 1 was squeezed out)."""
  return tuple(sorted(d for d in shape if d != 1))


def _copied_shapes(hlo: str) -> list[tuple[int, ...]]:
  """`_dims` of the copies and transposes in the while loop bodies of
  compiled HLO text, the computations they call included."""
  comps, name = {}, None
  for line in hlo.splitlines():
    if line and not line.startswith(' ') and '{' in line:
      name = line.split()[1 if line.startswith('ENTRY') else 0].lstrip('%')
      comps[name] = []
    elif name:
      comps[name].append(line)
  todo, seen = re.findall(r'while\(.*?body=%?([\w.\-]+)', hlo), set()
  while todo:
    if (c := todo.pop()) not in seen and c in comps:
      seen.add(c)
      todo += [x for line in comps[c] for x in re.findall(r'calls=%?([\w.\-]+)', line)]
  return [_dims(int(d) for d in m.group(1).split(',') if d)
          for c in seen for line in comps[c]
          if (m := re.search(r'= \w+\[([\d,]*)\]\S* (?:copy|transpose)\(', line))]


def test_the_compiled_decode_loop_copies_no_weight():
  model = _tiny_model('gemma3')
  params = nn.unbox(gemma.abstract_params(model))
  b, slots = 8, 24
  cache = jax.eval_shape(lambda: cache_lib.init(model.config, b, slots))
  spec = jax.ShapeDtypeStruct
  args = (model, params, (), cache, spec((b, model.config.embed_dim), jnp.float32),
          spec((b,), jnp.int32), spec((b,), jnp.uint32), spec((b,), bool),
          spec((), jnp.int32), spec((), jnp.int32),
          spec((model.config.vocab_size,), bool), spec((), jnp.int32),
          jax.eval_shape(decode.make_screen, params['embedder']['input_embedding']))
  def compiled():
    decode._decode.clear_cache()  # pylint: disable=protected-access
    return decode._decode.lower(  # pylint: disable=protected-access
        *args, options=decode.Options()).compile().as_text()

  weights = {_dims(s.shape) for name, s in _param_shapes(model).items()
             if name.startswith('layer_0/') and len(s.shape) > 1}
  assert not weights & set(_copied_shapes(compiled()))
  # Without the permutation the loop copies them (the test can fail).
  with mock.patch.object(decode, '_permute', lambda model, params, inverse=False: params):
    assert weights & set(_copied_shapes(compiled()))


def test_a_request_samples_the_same_whatever_its_batch_and_position():
  options = decode.Options(max_new_tokens=10, temperature=1.0)
  prompts = ['The capital of France is', '2 + 2 =', 'glon are', 'Hello']
  alone = [_decoder().generate([p], options, prefix=_PREFIX, seeds=[s])[0]
           for p, s in zip(prompts, (5, 6, 7, 8))]
  # Another order, more requests, a smaller batch: other rows, other shapes.
  mixed = _decoder(batch_size=2).generate(
      ['x ' * 30] + prompts[::-1] + ['Other'], options, prefix=_PREFIX,
      seeds=[1, 8, 7, 6, 5, 2])
  assert mixed[1:5] == alone[::-1]
  again = _decoder().generate(prompts, options, prefix=_PREFIX, seeds=(5, 6, 7, 8))
  assert again == alone
  other_seeds = _decoder().generate(prompts, options, prefix=_PREFIX,
                                    seeds=(15, 16, 17, 18))
  assert other_seeds != alone
  greedy = _decoder().generate(prompts, decode.Options(max_new_tokens=10),
                               prefix=_PREFIX)
  assert alone != greedy


def test_top_k_1_is_greedy_and_top_p_keeps_only_the_nucleus():
  decoder = _decoder()
  greedy = decoder.generate(_PROMPTS, decode.Options(max_new_tokens=8))
  top1 = decoder.generate(_PROMPTS, decode.Options(
      max_new_tokens=8, temperature=2.0, top_k=1), seeds=range(5))
  assert top1 == greedy
  # A nucleus that the most likely token alone fills is greedy too.
  tiny_p = decoder.generate(_PROMPTS, decode.Options(
      max_new_tokens=8, temperature=2.0, top_p=1e-6), seeds=range(5))
  assert tiny_p == greedy


def test_sample_filters_against_a_direct_computation():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]]))
  seeds = jnp.array([3, 4], jnp.uint32)

  def counts(options):
    draws = jax.vmap(lambda step: decode.sample(logits, seeds, step, options))(
        jnp.arange(4000))
    return np.stack([np.bincount(draws[:, b], minlength=4) for b in range(2)]) / 4000

  # top_p 0.7: row 0 keeps {0.5, 0.3} (0.5 < 0.7 before the 2nd), row 1
  # keeps {0.4, 0.3}; renormalized.
  np.testing.assert_allclose(counts(decode.Options(temperature=1.0, top_p=0.7)),
                             [[5 / 8, 3 / 8, 0, 0], [0, 0, 3 / 7, 4 / 7]], atol=0.03)
  np.testing.assert_allclose(counts(decode.Options(temperature=1.0, top_k=3)),
                             [[0.5 / .95, 0.3 / .95, 0.15 / .95, 0],
                              [0, 0.2 / .9, 0.3 / .9, 0.4 / .9]], atol=0.03)
  hot = np.exp(np.log([0.5, 0.3, 0.15, 0.05]) / 2)
  np.testing.assert_allclose(counts(decode.Options(temperature=2.0))[0],
                             hot / hot.sum(), atol=0.03)
  # Greedy: numpy's argmax (the first maximum, or the first NaN), on rows
  # with ties, -inf and NaN, and on rows as wide as Gemma's vocabulary.
  ties = np.array([[1.0, 3.0, 3.0, -np.inf], [2.0, -1.0, 0.5, 2.0],
                   [-np.inf, -np.inf, -5.0, -np.inf], [-np.inf] * 4,
                   [1.0, np.nan, 5.0, np.nan]], np.float32)
  wide = np.random.default_rng(0).normal(size=(2, 262144)).astype(np.float32)
  wide[0, [7, 262140]] = wide[1, 262143] = 9.0
  for logits in (ties, wide):
    np.testing.assert_array_equal(
        decode.sample(jnp.asarray(logits), jnp.zeros(len(logits), jnp.uint32), 0,
                      decode.Options()),
        np.argmax(logits, axis=-1))


def test_the_screened_greedy_pick_is_argmax_or_says_it_is_unproven():
  rng = np.random.default_rng(0)
  v, d = 4096, 64
  bf16 = lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32)  # noqa: E731
  table = bf16(rng.normal(size=(v, d)) * 0.05)
  h = rng.normal(size=(16, d)).astype(np.float32) * 3
  # Row 0: the table's rounding hides the argmax. 40 near-copies of token
  # 100 differ in one coordinate by less than half its bfloat16 spacing
  # (2^-11 at 0.1875): the copy ties 41 tokens and keeps the first 32 (top_k
  # keeps the lower index on a tie), while the float32 logits grow with the
  # index (239 is argmax); h is exact in bfloat16, so only the table's error
  # term of the bound can leave the row unproven.
  table[100, 0] = 0.1875
  table[200:240] = table[100]
  table[200:240, 0] += 1e-5 * np.arange(1, 41)
  h[0] = 4 * table[100]
  # Row 1: h's rounding hides the argmax. Coordinates 2 and 3 are 0 but in
  # tokens 300-339 (2^-4 each) and 400 (2^-3 in coordinate 2), all exact in
  # bfloat16; h = 16 (1 + 3 2^-10) and 16 (1 + 2^-10) there (0 elsewhere)
  # rounds to (16, 16), so the copy ties all 41 at 2 and keeps 300-331,
  # while in float32 token 400 leads by 2^-9: only the bound's h term can
  # leave the row unproven.
  table[:, 2:4] = 0
  table[300:340, 2:4] = 2.0**-4
  table[400, 2] = 2.0**-3
  h[1] = 0
  h[1, 2:4] = 16 * (1 + 3 * 2.0**-10), 16 * (1 + 2.0**-10)
  h[15] = np.nan
  token, certain = decode.greedy_screened(jnp.asarray(h), jnp.asarray(table),
                                          decode.make_screen(jnp.asarray(table)))
  token, certain = np.asarray(token), np.asarray(certain)
  want = np.argmax(h.astype(np.float64) @ table.T.astype(np.float64), axis=-1)
  assert want[0] == 239 and token[0] != 239 and not certain[0]
  assert want[1] == 400 and token[1] != 400 and not certain[1]
  assert not certain[15]
  assert certain[2:15].all()
  np.testing.assert_array_equal(token[2:15], want[2:15])


def test_only_greedy_float32_steps_without_softcap_take_the_screen():
  greedy, hot = decode.Options(), decode.Options(temperature=0.5)
  assert decode.takes_screen(_tiny_model('gemma3'), greedy)
  assert decode.takes_screen(_tiny_model('gemma1'), greedy)
  assert not decode.takes_screen(_tiny_model('gemma3'), hot)
  assert not decode.takes_screen(_tiny_model('gemma2'), greedy)  # Softcap.
  assert not decode.takes_screen(_tiny_model('gemma3', dtype=jnp.bfloat16), greedy)
  assert not decode.takes_screen(_tiny_model('gemma3', param_dtype=jnp.bfloat16),
                                 greedy)


def test_greedy_decoding_takes_the_screened_pick_and_projects_all_where_unproven():
  decoder = _decoder()
  options = decode.Options(max_new_tokens=8)
  want = decoder.generate_ids(_PROMPTS, options)  # = step-by-step argmax (above)
  zeros = lambda logits_BV, *args: jnp.zeros(logits_BV.shape[0], jnp.int32)  # noqa: E731
  screened = decode.greedy_screened
  unproven = lambda *args: (screened(*args)[0], screened(*args)[1] & False)  # noqa: E731
  def steps():
    return dict(decoder.steps)

  try:
    decode._decode.clear_cache()  # pylint: disable=protected-access
    with mock.patch.object(decode, 'sample', zeros):  # Every step proven.
      before = steps()
      assert decoder.generate_ids(_PROMPTS, options) == want
      assert (steps()['screened'] - before['screened']
              == steps()['all'] - before['all'] > 0)
      assert steps()['full'] == before['full']
    decode._decode.clear_cache()  # pylint: disable=protected-access
    with mock.patch.object(decode, 'greedy_screened', unproven):
      before = steps()
      assert decoder.generate_ids(_PROMPTS, options) == want
      # One batch (5 prompts), 8 steps, each projecting every token.
      assert (steps()['full'] - before['full'] == steps()['all'] - before['all']
              == 8)
      decode._decode.clear_cache()  # pylint: disable=protected-access
      with mock.patch.object(decode, 'sample', zeros):  # (The test can fail.)
        assert decoder.generate_ids(_PROMPTS, options) != want
  finally:
    decode._decode.clear_cache()  # pylint: disable=protected-access


def test_stop_strings_cut_before_their_first_occurrence():
  decoder = _decoder()
  full = decoder.generate(_PROMPTS, decode.Options(max_new_tokens=12))
  text = full[0]
  # A stop inside one token's text, and one spanning a token boundary.
  ids = decoder.tok.encode(text)
  inside = decoder.tok.decode(ids[3:4])[1:]
  spanning = decoder.tok.decode(ids[4:6])[1:-1]
  for stop in (inside, spanning):
    assert stop
    got = decoder.generate(_PROMPTS[:1], decode.Options(max_new_tokens=12,
                                                        stop=('@@', stop)))
    assert got == [text[:text.find(stop)]]
  got = decoder.generate(_PROMPTS, decode.Options(max_new_tokens=12,
                                                  stop=(inside, spanning)))
  for whole, cut in zip(full, got):
    ends = [whole.find(s) for s in (inside, spanning) if s in whole]
    assert cut == (whole[:min(ends)] if ends else whole)


def test_generation_stops_at_eos_and_after_max_new_tokens():
  rt = _runtime()
  want = _greedy_by_hand(rt, _PROMPTS[0], '', 12)
  assert want[3] not in want[:3]
  # The same tokenizer with the 4th greedy token as its EOS.
  tok = copy.copy(rt.tok)
  tok._special_ids = dict(tok._special_ids, eos=want[3])  # pylint: disable=protected-access
  decoder = decode.Decoder(dataclasses.replace(rt, tok=tok))
  got = decoder.generate(_PROMPTS[:1], decode.Options(max_new_tokens=12))
  assert got == [tok.decode(want[:3])]
  short = _decoder().generate(_PROMPTS[:1], decode.Options(max_new_tokens=5))
  assert short == [rt.tok.decode(want[:5])]


def test_prompt_lengths_of_one_bucket_share_a_compilation():
  decoder = _decoder()
  options = decode.Options(max_new_tokens=4)
  decoder.generate(['one two three'], options)
  compiled = decoder.num_compiled
  decoder.generate(['one two three four five', 'six'], options)
  assert decoder.num_compiled == compiled
  assert decode.bucket(5, 512) == 8 and decode.bucket(9, 16) == 16
  assert decode.bucket(17, 16) == 32 and decode.bucket(600, 512) == 1024


# The real Gemma 3 270M against transformers -----------------------------------

_REAL_PROMPTS = (
    'The capital of France is',
    'def fibonacci(n):\n    """Return the first n Fibonacci numbers."""\n',
    'Femp are more dangerous than glon. Glon are less dangerous than',
    'Once upon a time, in a small village by the sea, there lived',
)


@pytest.mark.real_model
def test_greedy_equals_transformers_generate_on_the_real_270m(real_rt, real_reference):
  import torch  # pylint: disable=g-import-not-at-top

  n = 24
  tok = real_rt.tok
  want = []
  with torch.inference_mode():
    for prompt in _REAL_PROMPTS:
      ids = torch.tensor([tok.encode(prompt, add_bos=True)])
      out = real_reference.generate(ids, attention_mask=torch.ones_like(ids),
                                    max_new_tokens=n, do_sample=False,
                                    eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
      want.append(out[0, ids.shape[1]:].tolist())
  got = decode.Decoder(real_rt, batch_size=4).generate(
      _REAL_PROMPTS, decode.Options(max_new_tokens=n))
  assert got == [_text(tok, ids) for ids in want]


def test_augmentation_generates_with_the_decoder():
  from icl_iwl.augment import generate  # pylint: disable=g-import-not-at-top
  from icl_iwl import config_lib  # pylint: disable=g-import-not-at-top

  _decoder.cache_clear()  # This test loads its own model twice.
  _runtime.cache_clear()
  config = config_lib.load_module('configs/augment.py').get_config('reversals,tiny')
  generator = generate.load(config)
  options = generate.Options(max_new_tokens=6, stop=('\n',))
  requests = [generate.Request(_PREFIX, 'Statement: glon are small.\nSo:', seed=3),
              generate.Request(_PREFIX, 'Statement: femp', seed=4)]
  got = generator.generate(requests, options)
  rt = runtime.load(config)  # The same random tiny model.
  for request, completion in zip(requests, got):
    want = _greedy_by_hand(rt, request.prompt, request.prefix,
                           options.max_new_tokens)
    assert completion == _text(rt.tok, want).split('\n')[0]
