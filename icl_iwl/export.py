"""Exports weights to a transformers directory or a GGUF file.

    python -m icl_iwl.export --from=run:/tmp/ft/reversals_lora \
        --to=hf:/tmp/export/reversals_hf
    python -m icl_iwl.export --from=run:/tmp/ft/reversals_lora \
        --to=gguf:/tmp/export/reversals.gguf --dtype=bfloat16

--from is a checkpoint as configs name it (checkpoints/load.py): 'embedded',
'gguf:PATH', 'hf:DIR' or 'run:WORKDIR[@best|@last|@STEP]' (a run's LoRA
adapters are merged into its weights first). --to is
  hf:DIR     config.json (GemmaForCausalLM, Gemma2ForCausalLM or
             Gemma3ForCausalLM), model.safetensors and the tokenizer files:
             `AutoModelForCausalLM.from_pretrained(DIR)` and
             `AutoTokenizer.from_pretrained(DIR)` load it offline;
  gguf:PATH  one GGUF file as llama.cpp writes Gemma (checkpoints/gguf.py),
             with the tokenizer metadata of the source's GGUF, or rebuilt
             from the tokenizer.json of an hf: source
             (`gguf.tokenizer_fields_from_hf`).
The tokenizer is the source's: a run's is that of the checkpoint it was
trained from. transformers builds the tokenizer files of a GGUF tokenizer
(pip install -e ".[export]"; ~1 min for Gemma 3's 262k tokens), once per
GGUF file: they are cached in $ICL_IWL_CACHE/hf_tokenizers/.

Every mistake in the flags (an unknown scheme or dtype, a missing source, an
existing destination without --overwrite, a directory that cannot be
written) stops the command with one line before any weights load. The
destination is written beside itself under a temporary name and renamed
into place when complete; an existing one is replaced only then.
"""

import json
import logging
import os
import pathlib
import shutil
import tempfile

from absl import app
from absl import flags
import ml_dtypes
import numpy as np
import safetensors.numpy

from icl_iwl import config_lib
from icl_iwl import errors
from icl_iwl import paths
from icl_iwl import registry
from icl_iwl.checkpoints import gguf
from icl_iwl.checkpoints import hf
from icl_iwl.checkpoints import load
from icl_iwl.checkpoints import params as params_lib
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.model import presets

SOURCES = ('embedded', 'gguf:PATH', 'hf:DIR', 'run:WORKDIR[@best|@last|@STEP]')
TARGETS = ('hf:DIR', 'gguf:PATH')
DTYPES = gguf.DTYPES
# What an hf: source's tokenizer may consist of; copied when present.
_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer.model', 'tokenizer_config.json',
                    'special_tokens_map.json', 'added_tokens.json')
_NUMPY_DTYPES = {'float32': np.float32, 'float16': np.float16,
                 'bfloat16': ml_dtypes.bfloat16}

_FROM = flags.DEFINE_string(
    'from', None, 'The weights to export: embedded | gguf:PATH | hf:DIR | '
    'run:WORKDIR[@best|@last|@STEP] (a training run; LoRA is merged).')
_TO = flags.DEFINE_string(
    'to', None, 'Where: hf:DIR (a transformers checkpoint directory) or '
    'gguf:PATH (one GGUF file).')
_DTYPE = flags.DEFINE_string(
    'dtype', 'float32', f'Dtype of the written weights: {", ".join(DTYPES)} '
    '(GGUF keeps 1-D tensors, e.g. norms, in float32).')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Replace an existing destination (once the new one is '
    'complete).')


def tokenizer_source(source: str) -> str:
  """Where the tokenizer of checkpoint `source` lives: 'gguf:PATH' or
  'hf:DIR'; a run's is that of the checkpoint it was trained from."""
  kind, _, path = source.partition(':')
  if kind in ('embedded', 'random'):
    return f'gguf:{paths.embedded_gguf()}'
  if kind == 'run':
    run = load._run_config(path.partition('@')[0])  # pylint: disable=protected-access
    return tokenizer_source(run.model.checkpoint)
  return source


def _check_writable(path: pathlib.Path, flag: str) -> None:
  """UserError unless a file can be created beside `path` (its parent, or
  the nearest existing ancestor, which must then be a directory)."""
  ancestor = path.parent
  while not ancestor.exists():
    ancestor = ancestor.parent
  if not ancestor.is_dir():
    raise errors.UserError(f'{flag}: {ancestor} is not a directory.')
  try:
    with tempfile.TemporaryFile(dir=ancestor):
      pass
  except OSError as e:
    raise errors.UserError(f'{flag}: cannot write in {ancestor} ({e.strerror}).') from None


def check(source: str, target: str, dtype: str = 'float32',
          overwrite: bool = False) -> None:
  """Raises UserError (one line) unless exporting `source` to `target` can
  work; reads no weights.

  Args:
    source: one of SOURCES.
    target: one of TARGETS.
    dtype: one of DTYPES.
    overwrite: whether an existing destination may be replaced.
  """
  if source is None or target is None:
    raise errors.UserError('Pass --from and --to (see --help).')
  if source == 'random':
    raise errors.UserError("--from=random: random weights are not worth "
                           f"exporting; use {', '.join(SOURCES)}.")
  config_lib.check_checkpoint_spec(source, '--from')
  kind, _, path = target.partition(':')
  if kind not in ('hf', 'gguf') or not path:
    raise errors.UserError(registry.unknown_name_message('--to', target, list(TARGETS)))
  if dtype not in DTYPES:
    raise errors.UserError(registry.unknown_name_message('--dtype', dtype, list(DTYPES)))
  destination = pathlib.Path(path).expanduser()
  if destination.exists() and not overwrite:
    raise errors.UserError(f'--to={target}: {destination} exists; pass --overwrite '
                           'to replace it.')
  if kind == 'hf' and destination.is_file():
    raise errors.UserError(f'--to={target}: {destination} is a file, not a directory.')
  if kind == 'gguf' and destination.is_dir():
    raise errors.UserError(f'--to={target}: {destination} is a directory.')
  _check_writable(destination, f'--to={target}')
  try:  # A run's config.json names the checkpoint it was trained from.
    tok_kind, _, tok_path = tokenizer_source(source).partition(':')
  except CheckpointError as e:
    raise errors.UserError(str(e)) from None
  if kind == 'gguf' and tok_kind == 'hf' and not (
      pathlib.Path(tok_path) / 'tokenizer.json').is_file():
    raise errors.UserError(
        f'--to={target}: the GGUF tokenizer is rebuilt from a tokenizer.json, and '
        f'hf:{tok_path} (the tokenizer of --from={source}) has none.')
  if kind == 'hf' and tok_kind == 'gguf':
    try:  # transformers' GGUF reader imports torch.
      import torch  # pylint: disable=g-import-not-at-top,unused-import
      import transformers  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise errors.UserError(
          f'--to={target}: writing the tokenizer files of a GGUF tokenizer needs '
          'transformers: pip install -e ".[export]"') from None


def read(source: str) -> tuple[presets.GemmaConfig, params_lib.Params]:
  """(architecture, param tree of host numpy arrays, LoRA merged) of `source`."""
  kind, _, path = source.partition(':')
  if kind == 'embedded':
    return gguf.load_embedded()
  if kind == 'gguf':
    return gguf.load(path)[:2]
  if kind == 'hf':
    return hf.load(path)
  run = load._run_config(path.partition('@')[0])  # pylint: disable=protected-access
  preset = presets.get(run.model.preset)
  return preset, load._params(source, preset)  # pylint: disable=protected-access


def hf_tokenizer_dir(gguf_path: str | os.PathLike) -> pathlib.Path:
  """The Hugging Face tokenizer files transformers builds from a GGUF file's
  tokenizer metadata (`AutoTokenizer.from_pretrained(..., gguf_file=...)`,
  then `save_pretrained`): built once per file content and cached in
  $ICL_IWL_CACHE/hf_tokenizers/<CRC-32>-<size>/ (written atomically)."""
  import transformers  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(gguf_path).absolute()
  cached = (paths.cache_dir() / 'hf_tokenizers' /
            f'{paths.crc32(path)}-{path.stat().st_size}')
  if cached.is_dir():
    return cached
  tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
  try:
    with paths.atomic_dir(cached) as tmp:
      tok.save_pretrained(str(tmp))
  except FileExistsError:  # Another process built it meanwhile: the same files.
    pass
  return cached


def write_tokenizer_files(tok_source: str, directory: pathlib.Path) -> None:
  """Writes the Hugging Face tokenizer files of `tok_source` ('gguf:PATH':
  built by transformers from the GGUF metadata, `hf_tokenizer_dir`; 'hf:DIR':
  copied)."""
  kind, _, path = tok_source.partition(':')
  if kind == 'hf':
    files = [pathlib.Path(path) / name for name in _TOKENIZER_FILES]
  else:
    files = list(hf_tokenizer_dir(path).iterdir())
  for file in files:
    if file.is_file():
      shutil.copyfile(file, directory / file.name)


def write_hf(directory: str | os.PathLike, config: presets.GemmaConfig,
             params: params_lib.Params, dtype: str = 'float32') -> None:
  """Writes config.json and model.safetensors of a transformers checkpoint.

  Args:
    directory: holds the tokenizer files already (`write_tokenizer_files`);
      config.json states their special ids.
    config: the architecture (`hf.model_type` picks the transformers class).
    params: its param tree, without LoRA factors.
    dtype: of every tensor: float32, float16 or bfloat16.
  """
  directory = pathlib.Path(directory)
  tok = tokenizer_lib.from_hf_dir(directory)
  special = {'pad': tok.pad_id, 'eos': tok.eos_id, 'bos': tok.bos_id}
  (directory / 'config.json').write_text(  # Checks the class can state it.
      json.dumps(hf.hf_config(config, special, dtype), indent=2) + '\n')
  tensors = hf.from_params(params_lib.flatten(params), config)
  np_dtype = _NUMPY_DTYPES[dtype]
  with paths.atomic_path(directory / 'model.safetensors') as tmp:  # open()'s mode.
    safetensors.numpy.save_file(
        {k: np.ascontiguousarray(np.asarray(v, np.float32).astype(np_dtype))
         for k, v in tensors.items()}, str(tmp), metadata={'format': 'pt'})


def export(source: str, target: str, dtype: str = 'float32',
           overwrite: bool = False) -> pathlib.Path:
  """Exports checkpoint `source` to `target` (see the module docstring).

  Returns:
    the written directory or file.

  Raises:
    UserError: for flags that cannot work (`check`, before reading weights),
      a source that does not load, or an architecture the target format
      cannot state.
  """
  check(source, target, dtype, overwrite)
  kind, _, path = target.partition(':')
  destination = pathlib.Path(path).expanduser()
  tok_source = tokenizer_source(source)
  try:  # A CheckpointError here is the user's: e.g. a run without that step.
    if kind == 'gguf':  # Before the weights: a tokenizer it cannot state stops here.
      tok_kind, _, tok_path = tok_source.partition(':')
      tok_fields = (gguf.tokenizer_fields(gguf.read(tok_path)) if tok_kind == 'gguf'
                    else gguf.tokenizer_fields_from_hf(tok_path))
    config, params = read(source)
    if kind == 'hf':
      with paths.atomic_dir(destination, overwrite) as tmp:
        write_tokenizer_files(tok_source, tmp)
        write_hf(tmp, config, params, dtype)
    else:
      misread = gguf.transformers_misreads(config)
      if misread:
        logging.warning("transformers' GGUF loader will misread %s: %s (our "
                        'loader reads it right).', destination, '; '.join(misread))
      with paths.atomic_path(destination) as tmp:
        gguf.write(tmp, config, params, tok_fields, dtype)
  except CheckpointError as e:
    raise errors.UserError(str(e)) from e
  logging.info('Exported %s to %s (%s).', source, destination, dtype)
  return destination


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  print(export(_FROM.value, _TO.value, _DTYPE.value, _OVERWRITE.value))


if __name__ == '__main__':
  app.run(errors.main_wrapper(main))
