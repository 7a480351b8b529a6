"""Fine-tune Gemma 3 270M on a dataset's training documents (knowledge FT).

    python -m icl_iwl.main --config=configs/finetune.py:reversals \
        --workdir=/tmp/ft/reversals
    python -m icl_iwl.main --config=configs/finetune.py:reversals,lora \
        --workdir=/tmp/ft/reversals_lora

arg: the dataset, then optional words: 'lora' (rank-16 adapters instead of
full fine-tuning), 'bf16' (bf16 compute, f32 master weights), 'tiny' (a
random two-layer model on the small dataset, for tests and laptops),
'augmented' (the documents plus jsonl/augment_<dataset>, which
configs/augment.py:<dataset> writes; `data.sources` sets the weights, see
icl_iwl/augment/mixture.py). The probe splits (the original dataset's) are
scored every `eval.every` steps and at the end.

get_sweep(arg): learning rate x (full fine-tuning, LoRA rank 16), 6 runs:

    python -m launch.sweep --config=configs/finetune.py:reversals \
        --root=/tmp/sweeps/reversals
"""

from icl_iwl import config_lib

# Tokens per row: every training document fits whole (the longest semantic
# document has 205 tokens; every other dataset's fit 64, see docs/datasets.md).
_SEQ_LEN = {'semantic': 256}


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, {'dataset': config_lib.DATASET_WORDS},
                           dataset='reversals', lora=False, bf16=False,
                           tiny=False, augmented=False)
  c = config_lib.base('train')
  c.data = config_lib.data(a.dataset)
  if a.dataset == 'ictrain':  # Task pairs, not documents: IC-Train sequences.
    c.data.sampler = 'random'
  c.train = config_lib.train(seq_len=_SEQ_LEN.get(a.dataset, 128))
  c.checkpoint = config_lib.checkpoint()
  c.eval = config_lib.evaluation(every=100)  # The training dataset's probes.
  c.scorer = config_lib.scorer()
  if a.lora:
    c.model.lora.rank = 16
    c.train.learning_rate = 1e-3
  if a.bf16:
    c.model.dtype = 'bfloat16'
  if a.tiny:
    c.model.preset, c.model.checkpoint = 'tiny', 'random'
    c.data.config = 'small'
    c.train.update(steps=6, batch_size=8, seq_len=_SEQ_LEN.get(a.dataset, 64),
                   warmup_steps=2, log_every=1)
    c.checkpoint.every = 2
    c.eval.every = 3
    c.eval.limit = 8
  if a.augmented:
    name = config_lib.augmented_name(a.dataset, c.data.config, tiny=a.tiny)
    c.data.sources = f'original:1,jsonl/{name}:1'
  return c


def get_sweep(arg: str | None = None) -> list[dict[str, float | int]]:
  """Overrides of get_config(arg), one dict per run (see launch/sweep.py)."""
  del arg  # The same grid for every dataset.
  return [{'train.learning_rate': lr, 'model.lora.rank': rank}
          for rank in (0, 16) for lr in (1e-4, 3e-4, 1e-3)]
