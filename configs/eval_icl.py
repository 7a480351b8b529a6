"""In-context evaluation of the pretrained Gemma 3 270M on one dataset.

    python -m icl_iwl.main --config=configs/eval_icl.py:reversals \
        --workdir=/tmp/icl_eval/reversals

arg: the dataset (reversals, syllogisms, reversal_curse, semantic, ictrain,
or jsonl/<name> for an imported one), optionally with ',tiny' for a random
two-layer model on the small dataset (tests). Score a trained model with
--config.model.checkpoint=run:WORKDIR (see checkpoints/load.py). Each probe split is scored with no context (baseline) and with the
training documents in a context of at most `icl.budget` tokens, averaged over
`icl.num_subsamples` subsamples when the documents do not fit. Writes
results.md (accuracy by summed log-likelihood, spread over subsamples).
"""

from icl_iwl import config_lib


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, {'dataset': config_lib.DATASET_WORDS},
                           dataset='reversals', tiny=False)
  c = config_lib.base('eval_icl')
  c.eval = config_lib.evaluation(a.dataset)  # Every probe split by default.
  c.scorer = config_lib.scorer()
  c.icl = config_lib.icl()
  if a.tiny:
    c.model = config_lib.model(preset='tiny', checkpoint='random')
    c.eval.config = 'small'
    c.icl.budget = 512
    c.icl.num_subsamples = 2
  return c
