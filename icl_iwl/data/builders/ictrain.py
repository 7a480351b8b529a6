"""IC-Train task family for the contrastive context-sampling study.

Input -> output tasks in which similar inputs share structure, so a target can
be solved from weights, from the context, or by copying a near-duplicate:
translation into an invented language (`ictrain_translation`) and relabelled
classification (`ictrain_classification`).

Splits:
  train     task pairs `{'id', 'input', 'output', 'task', 'facts'}`: the pool
            that context samplers draw from.
  test_iwl  probes answerable only from weights (unrelated context).
  test_icl  probes answerable only from the context (novel words, remapped
            labels).
  test_copy probes whose context holds a near-duplicate with another answer.
Probes carry their structured context (`context_inputs`, `context_outputs`,
`input`) and `prompt = schema.render_context_prompt(...)` of it; their choices
are `schema.render_answer(output)` (ending in the end marker); `task` names the
task and `kind` the probe type. In every probe the right output's words (or
label) appear in the context as often as the wrong ones' (the copy probe's
near-duplicate output aside), so no preference for or against context words
answers a probe.
"""

import dataclasses
import random

import tensorflow_datasets as tfds

from icl_iwl.data import schema
from icl_iwl.data import words
from icl_iwl.data.builders import base
from icl_iwl.data.builders import ictrain_classification as classification
from icl_iwl.data.builders import ictrain_translation as translation

PROBE_KINDS = ('iwl', 'icl', 'copy')


@dataclasses.dataclass(eq=False)
class IcTrainConfig(base.GeneratorConfig):
  """Sizes of the IC-Train task family.

  Attributes:
    translation_pairs / classification_pairs: training pairs per task.
    probes_per_task: probes per task in each test split.
    num_context: context examples per probe.
    num_choices: choices per probe.
  """

  translation_pairs: int = 4000
  classification_pairs: int = 2000
  probes_per_task: int = 100
  num_context: int = 4
  num_choices: int = 4


FULL = IcTrainConfig(name='full', seed=0, description='Paper-like sizes.')
SMALL = IcTrainConfig(
    name='small', seed=0, translation_pairs=120, classification_pairs=60,
    probes_per_task=6, description='A small pool, for tests.')


def generate(config: IcTrainConfig) -> base.Splits:
  """All splits of the IC-Train task family."""
  sampler = words.WordSampler(config.seed, 'ictrain')
  num_english = sum(len(translation.KNOWN[c]) + len(translation.NOVEL[c])
                    for c in translation.KNOWN)
  tasks = (
      translation.TranslationTask(
          random.Random(f'ictrain-translation:{config.seed}'),
          sampler.words(num_english), config.num_choices, config.num_context),
      classification.ClassificationTask(
          random.Random(f'ictrain-classification:{config.seed}'),
          sampler.words(len(classification.CLASSES)), config.num_choices,
          config.num_context),
  )
  train = (tasks[0].make_pool(config.translation_pairs)
           + tasks[1].make_pool(config.classification_pairs))
  random.Random(f'ictrain-train:{config.seed}').shuffle(train)
  splits = {'train': train}
  for kind in PROBE_KINDS:
    splits[f'test_{kind}'] = [
        getattr(task, kind)(i) for task in tasks
        for i in range(config.probes_per_task)
    ]
  return splits


class Ictrain(base.RecordBuilder):
  """IC-Train tasks: invented-language translation, relabelled classes."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release.',
      '2.0.0': 'Right and wrong choices appear in probe contexts equally '
               'often; choices end in the end marker (schema.render_answer) '
               'and prompts have no blank lines; words from fixed hash '
               'slots.',
  }
  BUILDER_CONFIGS = [FULL, SMALL]
  RECORD_KINDS = (schema.PAIR, schema.IC_PROBE)

  def generate(self, config: IcTrainConfig) -> base.Splits:
    return generate(config)
