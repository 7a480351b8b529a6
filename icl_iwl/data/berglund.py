r"""Import the public reversal-curse data of Berglund et al. (2023).

    python -m icl_iwl.data.berglund --dir=path/to/june_version_7921032488 \
        [--name=berglund] [--seed=0] [--data_dir=...] [--overwrite]

The directory holds JSONL files of `{"prompt": str, "completion": str}` lines.
Training files become documents (prompt + completion). Test files become MC
probes: the line's completion against `num_choices - 1` completions drawn with
a seeded RNG from other lines of the same file that give a different answer
(sharing under half of their words with it, so paraphrases of the same
description are never wrong choices). Missing files are skipped; the
randomized-control and validation files are not used.
"""

import os
import random
import re
from typing import Sequence

from absl import app
from absl import flags

from icl_iwl import errors
from icl_iwl.data import jsonl
from icl_iwl.data import schema
from icl_iwl.data.builders import base
from icl_iwl.data.builders import user

TRAIN_FILES = ('p2d_prompts_train.jsonl', 'd2p_prompts_train.jsonl',
               'both_prompts_train.jsonl')
TEST_FILES = {
    'p2d_prompts_test.jsonl': 'test_p2d',
    'd2p_prompts_test.jsonl': 'test_d2p',
    'both_prompts_test.jsonl': 'test_both',
    'p2d_reverse_prompts_test.jsonl': 'test_p2d_reverse',
    'd2p_reverse_prompts_test.jsonl': 'test_d2p_reverse',
}


def _read(path: str) -> list[tuple[int, str, str]]:
  """(line, prompt, completion), the prompt without trailing whitespace."""
  lines = []
  for lineno, obj in jsonl.read_objects(path):
    for key in ('prompt', 'completion'):
      if key not in obj:
        raise jsonl.JsonlError(f'{path}:{lineno}: missing key {key!r}')
      if not isinstance(obj[key], str):
        raise jsonl.JsonlError(f'{path}:{lineno}: {key!r} must be a string')
    prompt, completion = obj['prompt'], obj['completion']
    if prompt != prompt.rstrip():
      prompt, completion = prompt.rstrip(), ' ' + completion.lstrip()
    lines.append((lineno, prompt, completion))
  return lines


# Words that two different answers share without meaning the same thing.
_FUNCTION_WORDS = frozenset(
    'a an the of to in on at by for with from and or as is was be been who '
    'whom that which this it its his her their they he she first'.split())


def _words(text: str) -> set[str]:
  return set(re.findall(r"[a-z0-9']+", text.lower())) - _FUNCTION_WORDS


def same_answer(a: str, b: str) -> bool:
  """Whether two completions are one answer: the same words, or more than
  half the content words of the shorter in common (paraphrases)."""
  wa, wb = _words(a), _words(b)
  if not wa or not wb:
    return a.split() == b.split()
  return len(wa & wb) > 0.5 * min(len(wa), len(wb))


def _probes(
    path: str, rng: random.Random, num_choices: int
) -> list[base.Record]:
  lines = _read(path)
  name = os.path.basename(path)
  completions = list(dict.fromkeys(c for _, _, c in lines))
  probes = []
  for lineno, prompt, completion in lines:
    others = [c for c in completions if not same_answer(c, completion)]
    if len(others) < num_choices - 1:
      raise jsonl.JsonlError(
          f'{path}:{lineno}: only {len(others)} other answers in the file, '
          f'need {num_choices - 1}')
    probes.append(base.multiple_choice(
        rng, completion, rng.sample(others, num_choices - 1),
        id=f'{name}:{lineno}', prompt=prompt, facts=[f'{name}:{lineno}'],
        kind=TEST_FILES[name].removeprefix('test_')))
  return probes


def collect(directory: str, seed: int = 0, num_choices: int = 4) -> base.Splits:
  """Reads and checks every known file in `directory`; returns the splits."""
  rng = random.Random(f'berglund:{seed}')
  train = []
  for name in TRAIN_FILES:
    path = os.path.join(directory, name)
    if os.path.exists(path):
      train += [{'id': f'{name}:{lineno}', 'text': prompt + completion,
                 'facts': [f'{name}:{lineno}']}
                for lineno, prompt, completion in _read(path)]
  splits = {'train': train} if train else {}
  for name, split in TEST_FILES.items():
    path = os.path.join(directory, name)
    if os.path.exists(path):
      splits[split] = _probes(path, rng, num_choices)
  if not train or len(splits) < 2:
    raise errors.UserError(
        f'{directory} needs one of {TRAIN_FILES} and one of '
        f'{list(TEST_FILES)}.')
  return splits


def import_berglund(
    directory: str,
    name: str = 'berglund',
    data_dir: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
):
  """Validates the Berglund files in `directory`, then writes `jsonl/<name>`.

  Returns:
    The TFDS builder of the written dataset.

  Raises:
    jsonl.JsonlError: on the first malformed line; nothing is written then.
  """
  splits = collect(directory, seed)
  return user.write(name, splits, [schema.DOCUMENT, schema.MC], data_dir,
                    overwrite)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run, so modules import cleanly)."""
  flags.DEFINE_string('dir', None, 'Directory of the Berglund JSONL files.')
  flags.DEFINE_string('name', 'berglund', 'Name of the dataset to write.')
  flags.DEFINE_integer('seed', 0, 'Seed of the wrong-choice draws.')
  flags.DEFINE_string(
      'data_dir', None, 'TFDS data dir (default: $ICL_IWL_DATA_DIR).')
  flags.DEFINE_bool(
      'overwrite', False, 'Replace an existing dataset of the same name.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.dir:
    raise app.UsageError('--dir is required.')
  jsonl.run_import(import_berglund, FLAGS.dir, FLAGS.name, FLAGS.data_dir,
                   FLAGS.seed, FLAGS.overwrite)


if __name__ == '__main__':
  define_flags()
  app.run(errors.main_wrapper(main))
