r"""Our jitted scorer and decoder as an lm-eval-harness model backend ('icl_iwl').

    python -m icl_iwl.lm_eval --model icl_iwl \
        --model_args checkpoint=embedded,dtype=float32 --tasks TASK

    import lm_eval
    from icl_iwl.lm_eval import IclIwlLM
    lm_eval.simple_evaluate(model=IclIwlLM(checkpoint='embedded'), tasks=[...])

lm-eval 0.4.13 finds a model only in its registry and loads no plugins, so
its own `lm_eval` command cannot see this backend; `python -m
icl_iwl.lm_eval ARGS` registers it and then runs lm-eval's command line with
ARGS. Importing this module registers it for `simple_evaluate(model='icl_iwl')`.

Requests are tokenized as lm-eval's HF backend tokenizes them (`TemplateLM`:
[BOS] + context, and the continuation split off the whole text's tokens), so
the numbers are comparable. Then (see `plan`):
  * requests with the same context become one item whose choices are their
    continuations: the context is encoded once, each continuation is a
    branch that sees it (`eval/packing.py`);
  * distinct contexts that share a prefix of at least `min_shared` tokens
    (a fixed few-shot prefix, a long task description) share one key/value
    memory of that prefix, encoded once (`Scorer.score_tokens`).

`generate_until` decodes each request's context with `decode.Decoder`
(greedy unless its gen_kwargs sample; see `_options`).

`loglikelihood_rolling` scores log p(text | BOS) in lm-eval's rolling windows
(`get_rolling_token_windows`, context_len=1): each window predicts at most
`max_length` tokens after as many earlier tokens as fit beside them in
`max_length` + 1. lm-eval's HF backend also scores a BOS token in front of
the text, so its totals differ from ours by log p(BOS | BOS).
"""

import collections
import dataclasses
import json
import os
import pathlib
import sys
from typing import Any, Sequence

from icl_iwl import config_lib
from icl_iwl import errors
from icl_iwl import runtime
from icl_iwl.eval import packing

try:
  # lm-eval's own models first: its get_model fills only an empty registry.
  import lm_eval.models  # pylint: disable=g-import-not-at-top,unused-import
  from lm_eval.api import model as lm_model  # pylint: disable=g-import-not-at-top
  from lm_eval.api import registry as lm_registry  # pylint: disable=g-import-not-at-top
  from lm_eval import utils as lm_utils  # pylint: disable=g-import-not-at-top
except ImportError as e:
  raise errors.UserError(
      f'lm-eval-harness is not installed ({e}): pip install -e ".[lm_eval]"'
  ) from None

NAME = 'icl_iwl'  # The model name in lm-eval's registry (--model icl_iwl).

Ids = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Group:
  """Items (distinct contexts) that share the memory of `shared` tokens."""

  shared: int
  items: list[int]


def _common_prefix(a: Ids, b: Ids) -> int:
  n = min(len(a), len(b))
  return next((i for i in range(n) if a[i] != b[i]), n)


def plan(contexts: Sequence[Ids], min_shared: int, fits: Sequence[bool]
         ) -> list[Group]:
  """Groups distinct contexts by their common prefix.

  Sorted contexts are cut into runs whose common prefix stays >= `min_shared`
  tokens; a run's items share a memory of that prefix (at most all but the
  shortest context's last token, which predicts its first choice token). A
  run of one context is put whole in its rows if it `fits` them, else all
  but its last token go into a memory.

  Args:
    contexts: distinct token id sequences, none empty.
    min_shared: the least common prefix worth a memory.
    fits: per context, whether it and its longest choice fit one row.

  Returns:
    The groups; every context index is in exactly one.
  """
  order = sorted(range(len(contexts)), key=lambda i: contexts[i])
  runs: list[tuple[int, list[int]]] = []  # (common prefix, items)
  for i in order:
    if runs:
      common, items = runs[-1]
      common = min(common, _common_prefix(contexts[items[-1]], contexts[i]))
      if common >= min_shared:
        runs[-1] = (common, items + [i])
        continue
    runs.append((len(contexts[i]), [i]))
  groups = []
  for common, items in runs:
    shortest = min(len(contexts[i]) for i in items)
    if len(items) == 1 and fits[items[0]]:
      groups.append(Group(0, items))
    else:
      groups.append(Group(min(common, shortest - 1), items))
  return groups


def _split_choices(choices: list[Ids], room: int) -> list[list[Ids]]:
  """`choices` in consecutive runs of at most `room` tokens in all (a longer
  choice alone)."""
  parts, used = [[]], 0
  for c in choices:
    if parts[-1] and used + len(c) > room:
      parts, used = parts + [[]], 0
    parts[-1].append(c)
    used += len(c)
  return parts


@lm_registry.register_model(NAME)
class IclIwlLM(lm_model.TemplateLM):
  """lm-eval's `LM` interface on our `Scorer` and `Decoder`; see the module doc.

  Built from a checkpoint (`checkpoint`, `dtype`, `preset` as in
  `config_lib.model`; `rows_per_batch` as in `ScorerConfig`) or, in Python,
  from a loaded `runtime.Runtime` (`rt`; its `config.scorer` if it has one,
  else the defaults; the other arguments but `min_shared` are then unused).
  lm-eval's own `batch_size`, `max_batch_size` and `device` are accepted and
  ignored: requests are packed into rows of a few fixed shapes on the JAX
  devices.
  """

  def __init__(self, checkpoint: str = 'embedded', dtype: str = 'float32',
               preset: str = 'gemma3_270m', rows_per_batch: int = 8,
               min_shared: int = 32, *, rt: runtime.Runtime | None = None,
               batch_size: Any = None, max_batch_size: Any = None,
               device: Any = None):
    super().__init__()
    del batch_size, max_batch_size, device  # See the class doc.
    if rt is None:
      config = config_lib.base('score')
      config.model = config_lib.model(preset, str(checkpoint), dtype)
      config.scorer = config_lib.scorer(rows_per_batch=int(rows_per_batch))
      runtime.validate(config)  # Before the model loads.
      rt = runtime.load(config)
    elif 'scorer' not in rt.config:
      config = rt.config.copy_and_resolve_references()
      config.scorer = config_lib.scorer()
      rt = dataclasses.replace(rt, config=config)
    self.rt, self.tok = rt, rt.tok
    self.scorer = runtime.scorer(rt.config, rt)
    self._decoder = None  # Made by the first generate_until.
    self.min_shared = int(min_shared)

  # Tokenization, as lm-eval's HF backend does it for Gemma ------------------

  @property
  def eot_token_id(self) -> int:
    return self.tok.eos_id

  @property
  def prefix_token_id(self) -> int:
    return self.tok.bos_id

  @property
  def max_length(self) -> int:
    """Most tokens a rolling window predicts (it and one context token fill
    the largest row)."""
    return max(self.scorer.config.buckets) - 1

  def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                 **kwargs) -> list[int]:
    """Token ids of `string`, BOS first unless `add_special_tokens` is False."""
    del kwargs
    return self.tok.encode(string, add_bos=add_special_tokens is not False)

  # Scoring -------------------------------------------------------------------

  def _loglikelihood_tokens(
      self, requests: Sequence[tuple[Any, Sequence[int], Sequence[int]]],
      disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
    """(log p(continuation | context), greedy) per (_, context ids,
    continuation ids); each distinct context is encoded once."""
    del kwargs
    contexts: dict[Ids, int] = {}  # Distinct context -> item.
    choices: list[dict[Ids, int]] = []  # Per item: continuation -> choice.
    where = []  # Per request: (item, choice), or None for no tokens.
    for _, context, continuation in requests:
      if not continuation:
        where.append(None)
        continue
      item = contexts.setdefault(tuple(context), len(contexts))
      if item == len(choices):
        choices.append({})
      where.append((item, choices[item].setdefault(tuple(continuation),
                                                   len(choices[item]))))
    keys = list(contexts)
    limit = max(self.scorer.config.buckets)
    fits = [len(c) + max(map(len, choices[i])) <= limit for i, c in enumerate(keys)]
    # An item's choices are split over several scored items if they do not
    # fit one row together.
    groups, scored, num_scored = [], {}, 0  # (item, choice) -> (scored, choice).
    for g in plan(keys, self.min_shared, fits):
      encoded = []
      for i in g.items:
        prompt = keys[i][g.shared:]
        for part in _split_choices(list(choices[i]), limit - len(prompt)):
          for j, continuation in enumerate(part):
            scored[i, choices[i][continuation]] = (num_scored, j)
          encoded.append(packing.Encoded(num_scored, prompt, tuple(part)))
          num_scored += 1
      groups.append((keys[g.items[0]][:g.shared], encoded))
    logprob, greedy = self.scorer.score_tokens(
        groups, num_scored, progress=not disable_tqdm)
    out = []
    for at in where:
      if at is None:
        out.append((0.0, True))
      else:
        k, j = scored[at]
        out.append((float(logprob[k][j]), bool(greedy[k][j])))
    for (key, _, _), result in zip(requests, out):
      if key is not None:  # None: a rolling window.
        self.cache_hook.add_partial('loglikelihood', key, result)
    return out

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False
                            ) -> list[float]:
    """log p(text | BOS) of each request's text; see the module doc."""
    windows, owner = [], []
    for r, (text,) in enumerate(req.args for req in requests):
      for context, continuation in map(
          lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
              token_list=self.tok.encode(text), prefix_token=self.prefix_token_id,
              max_seq_len=self.max_length, context_len=1)):
        windows.append((None, context, continuation))
        owner.append(r)
    totals = collections.Counter()
    for r, (logprob, _) in zip(owner, self._loglikelihood_tokens(
        windows, disable_tqdm=disable_tqdm)):
      totals[r] += logprob
    out = [float(totals[r]) for r in range(len(requests))]
    for req, total in zip(requests, out):
      self.cache_hook.add_partial('loglikelihood_rolling', req.args, total)
    return out

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Completions of each request's context (`decode.Decoder`): greedy, or
    sampled if its gen_kwargs say `do_sample` with a temperature > 0; cut at
    the first of `until`; at most `max_gen_toks` tokens. Requests with the
    same gen_kwargs are decoded together."""
    del disable_tqdm
    if self._decoder is None:
      self._decoder = runtime.decoder(self.rt.config, self.rt)
    by_kwargs = collections.defaultdict(list)
    for i, req in enumerate(requests):
      by_kwargs[json.dumps(req.args[1], sort_keys=True)].append(i)
    out = [''] * len(requests)
    for key, indices in by_kwargs.items():
      texts = self._decoder.generate([requests[i].args[0] for i in indices],
                                     _options(json.loads(key)))
      for i, text in zip(indices, texts):
        out[i] = text
        self.cache_hook.add_partial('generate_until', requests[i].args, text)
    return out


_GEN_KWARGS = ('until', 'max_gen_toks', 'do_sample', 'temperature', 'top_k', 'top_p')


def _options(gen_kwargs: dict[str, Any]) -> Any:
  """`decode.Options` of lm-eval's gen_kwargs, as its HF backend reads them."""
  from icl_iwl import decode  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(gen_kwargs) - set(_GEN_KWARGS))
  if unknown:
    raise errors.UserError(f'icl_iwl: unsupported gen_kwargs {unknown}; it '
                           f'reads {", ".join(_GEN_KWARGS)}.')
  until = gen_kwargs.get('until') or ()
  until = (until,) if isinstance(until, str) else tuple(until)
  temperature = float(gen_kwargs.get('temperature', 0.0) or 0.0)
  if not gen_kwargs.get('do_sample', temperature > 0):
    temperature = 0.0
  return decode.Options(
      max_new_tokens=int(gen_kwargs.get('max_gen_toks', 256)),
      temperature=temperature, top_k=int(gen_kwargs.get('top_k') or 0),
      top_p=float(gen_kwargs.get('top_p') or 1.0), stop=until)


def write_task(directory: str | os.PathLike, name: str,
               items: Sequence[packing.Item], fewshot: Sequence[packing.Item] = (),
               num_fewshot: int = 0) -> str:
  """Writes a local lm-eval multiple-choice task over `items`; returns its name.

  <directory>/<name>.yaml reads <name>.test.jsonl (and <name>.train.jsonl,
  the `fewshot` items, of which the first `num_fewshot` precede every
  question, joined by blank lines). A request's context is the few-shot
  block + item.context + item.prompt and its continuation a choice, as our
  scorer splits an Item. Run it with `--include_path <directory> --tasks
  <name>` (or `lm_eval.tasks.TaskManager(include_path=...)`).
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  files = {}
  for split, rows in (('test', items), ('train', fewshot)):
    if rows:
      files[split] = str(directory / f'{name}.{split}.jsonl')
      with open(files[split], 'w') as f:
        for item in rows:
          f.write(json.dumps({'prompt': item.context + item.prompt,
                              'choices': list(item.choices),
                              'answer': item.answer}) + '\n')
  task = {
      'task': name, 'dataset_path': 'json', 'dataset_kwargs': {'data_files': files},
      'test_split': 'test', 'output_type': 'multiple_choice',
      'doc_to_text': 'prompt', 'doc_to_choice': 'choices', 'doc_to_target': 'answer',
      'target_delimiter': '', 'fewshot_delimiter': '\n\n',
      'metric_list': [{'metric': 'acc', 'aggregation': 'mean',
                       'higher_is_better': True}]}
  if num_fewshot:
    task.update(fewshot_split='train', num_fewshot=num_fewshot,
                fewshot_config={'sampler': 'first_n'})
  # JSON is YAML.
  (directory / f'{name}.yaml').write_text(json.dumps(task, indent=2) + '\n')
  return name


def main() -> None:
  """lm-eval's command line with this backend registered (`--model icl_iwl`)."""
  from lm_eval import __main__ as lm_main  # pylint: disable=g-import-not-at-top
  lm_main.cli_evaluate()


if __name__ == '__main__':
  sys.exit(main())
