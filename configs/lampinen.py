"""The ICL-vs-fine-tuning table of Lampinen et al. 2025 on one dataset.

    python -m icl_iwl.main --config=configs/lampinen.py:reversals \
        --workdir=/tmp/lampinen/reversals
    python -m icl_iwl.report --root=/tmp/lampinen --out=docs/results/lampinen

Stages (jobs/experiment.py: each in its own sub-workdir, resumable, finished
stages skipped on rerun), on the dataset's 'medium' config (sized for a CPU),
or with the word 'small' its small one where `_STEPS` sizes it (semantic:
the medium training set, ~33k tokens, fits no context the 270M is scored
with on a CPU, the small one's ~4.3k fit one, so ICL sees every document
fine-tuning trains on):
  icl            the pretrained model with nothing in context (the prior) and
                 with the training documents in context: the whole training
                 set when it fits `icl.budget` tokens, else 8 probe-blind
                 subsamples (the paper's protocol);
  ft_s<k>        full fine-tuning on the documents, seeds k = 0, 1, 2;
  lora_s<k>      LoRA rank 16, seeds k = 0, 1, 2;
and with the word 'augmented' also
  augment        augmentation passes by the pretrained model
                 (configs/augment.py): those the words 'local' (rephrase,
                 reverse, infer), 'global' (inferences with the training set
                 in context) and 'split' (every document's sentences) name,
                 'local' when none is named, then
  aug_s<k>       full fine-tuning on the documents plus what they wrote.
Each trained run's probes are scored halfway and at the end.

Budget on a 2-core Xeon (embedded 270M, float32; docs/results.md): a full
fine-tuning step of 8 x 128 tokens takes 10-25 s (the low end with nothing
else running), LoRA a little less. `_STEPS` gives ~10 epochs of the medium
training sets (~7 of semantic medium's): reversals' six trained runs took 14-22 min
each with their probe evaluations, the whole experiment ~2 h 15 min;
syllogisms' 20-step runs ~6 min each; semantic small's (8 x 256) ~11 min
each on a 2-core AMD EPYC (~10 s a step of 8 x 128 there). Memory: the
process peaked at 17-22 GB resident (22.2 GB semantic small) until the
training loop gave each checkpoint save's host copy back (d092d5b); since,
reversals' augmented FT on the sentence split (augment, then three
60-step runs in one process) peaked at 10.2 GB. 'tiny' runs the
whole pipeline with a random two-layer model in a few minutes (tests).

get_sweep(arg): the same stages as a sweep, one run (and process) each,
in the same order (with --tpu each in turn on the slice; runs on several
machines must share the data dir, where augment writes the dataset the
aug_s<k> runs train on); the report reads either layout:

    python -m launch.sweep --config=configs/lampinen.py:reversals \
        --root=/tmp/lampinen_sweep/reversals   # <root>/order=<stage>/<stage>
    python -m icl_iwl.report --root=/tmp/lampinen_sweep --out=/tmp/report
"""

import pathlib

from icl_iwl import config_lib

_HERE = pathlib.Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
# Steps per trained run, per dataset config: ~10 epochs of the training set
# (8 x 128 tokens a step; semantic 8 x 256: medium ~7 epochs of its ~33k
# tokens, small ~10 of its ~4.3k).
_STEPS = {
    'medium': {'reversals': 60, 'reversal_curse': 60, 'syllogisms': 20,
               'semantic': 120},
    'small': {'semantic': 20},
}


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, {'dataset': config_lib.DATASET_WORDS},
                           dataset='reversals', augmented=False, tiny=False,
                           small=False, local=False, split=False,
                           **{'global': False})
  groups = [g for g in config_lib.AUGMENT_GROUPS if a[g]]
  if groups and not a.augmented:
    raise config_lib.ConfigError(
        f"Config arg {arg!r}: 'local', 'global' and 'split' choose the passes "
        "of augmented fine-tuning; add the word 'augmented'.")
  groups = groups or ['local']
  tiny = ',tiny' if a.tiny else ''
  size = 'small' if a.tiny or a.small else 'medium'
  if a.small and not a.tiny and a.dataset not in _STEPS['small']:
    raise config_lib.ConfigError(
        f"Config arg {arg!r}: no step count for {a.dataset}'s small config; "
        f"'small' is sized for {', '.join(_STEPS['small'])}.")
  stages = {}
  icl = config_lib.load_file(f'{_HERE / "eval_icl.py"}:{a.dataset}{tiny}')
  icl.eval.config = size
  if not a.tiny:
    icl.icl.budget = 6144  # The whole training set, where it fits.
  stages['icl'] = icl
  kinds = [('ft', ''), ('lora', ',lora')]
  if a.augmented:
    augment = config_lib.augment_stage(str(_HERE / 'augment.py'), a.dataset,
                                       size, groups, a.tiny)
    stages['augment'] = augment
    kinds.append(('aug', ''))
  for name, words in kinds:
    for seed in SEEDS:
      ft = config_lib.load_file(f'{_HERE / "finetune.py"}:{a.dataset}{words}{tiny}')
      ft.seed = ft.data.seed = seed
      ft.data.config = size
      if name == 'aug':
        ft.data.sources = f'original:1,jsonl/{augment.augment.output}:1'
        ft.label = f'augmented FT ({", ".join(groups)})'
      if not a.tiny:
        steps = _STEPS[size].get(a.dataset, 60)
        ft.train.update(steps=steps, warmup_steps=steps // 10, log_every=5)
        ft.eval.every = steps // 2
        ft.checkpoint.every = steps // 2
      stages[f'{name}_s{seed}'] = ft
  c = config_lib.ConfigDict()
  c.job = 'experiment'
  c.title = f'{a.dataset} ({size}): ICL vs fine-tuning (Lampinen et al. 2025)'
  c.order = tuple(stages)
  c.stages = config_lib.ConfigDict(stages)
  return c


def get_sweep(arg: str | None = None) -> list[dict[str, tuple[str, ...]]]:
  """One run per stage of get_config(arg), in its order (launch/sweep.py
  runs them in turn, so augment comes before the runs that train on it)."""
  return [{'order': (stage,)} for stage in get_config(arg).order]
