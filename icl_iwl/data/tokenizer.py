"""One tokenizer interface over SentencePiece and Hugging Face `tokenizers`.

    tok = tokenizer.load_default()  # Gemma 3 270M, from the embedded GGUF.
    ids = tok.encode('Hello world', add_bos=True)  # [2, 9259, 1902]
    tok.decode(ids)  # '<bos>Hello world'

Ids are exactly those of transformers' Gemma tokenizer (`add_special_tokens`
False unless `add_bos`), on both backends:
  * special tokens (control and unknown pieces such as `<start_of_turn>`,
    `<eos>`, `<unused0>`) written in the text are parsed into their ids, as
    transformers does with its added tokens;
  * `decode` renders every id except padding as its text, special tokens
    included, so `decode(encode(s)) == s` unless `s` holds `<pad>` (dropped)
    or a literal '▁' (SentencePiece's space; decoded as ' ').

A GGUF carries no `.model` file; `sentencepiece_model_from_gguf` rebuilds one
from the `tokenizer.ggml.*` metadata, and `load_default` caches it.
"""

import functools
import itertools
import json
import logging
import os
import pathlib
import re
from typing import Iterable, Protocol, Sequence

import gguf
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2
import tokenizers

from icl_iwl import paths
from icl_iwl.checkpoints import gguf_file

_Piece = sp_pb2.ModelProto.SentencePiece
# llama.cpp's token types (gguf.TokenType) as SentencePiece piece types.
_GGUF_PIECE_TYPES = {
    gguf.TokenType.NORMAL: _Piece.NORMAL,
    gguf.TokenType.UNKNOWN: _Piece.UNKNOWN,
    gguf.TokenType.CONTROL: _Piece.CONTROL,
    gguf.TokenType.USER_DEFINED: _Piece.USER_DEFINED,
    gguf.TokenType.UNUSED: _Piece.UNUSED,
    gguf.TokenType.BYTE: _Piece.BYTE,
}
_SPECIAL_NAMES = ('pad', 'eos', 'bos', 'unk')
# Gemma's special ids, for Hugging Face directories that do not state them.
_GEMMA_SPECIAL_IDS = {'pad': 0, 'eos': 1, 'bos': 2, 'unk': 3}
_SPACE = '\u2581'  # SentencePiece's escaped whitespace.
# Bump when `sentencepiece_model_from_gguf` or the cache format changes: old
# caches are then ignored (2: a CRC-32 file beside the cache).
_BUILDER_VERSION = 2


class _Backend(Protocol):
  """Text <-> ids without BOS/EOS; special tokens in the text are parsed."""

  def vocab_size(self) -> int: ...
  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...
  def decode(self, ids: list[int]) -> str: ...
  def id_to_piece(self, i: int) -> str: ...
  def piece_to_id(self, piece: str) -> int | None: ...


class _SentencePiece:
  """A SentencePiece processor that also parses special tokens in the text."""

  def __init__(self, model: bytes):
    self._sp = spm.SentencePieceProcessor(model_proto=model)
    self._specials = {
        self._sp.id_to_piece(i): i
        for i in range(self._sp.get_piece_size())
        if self._sp.is_control(i) or self._sp.is_unknown(i)
    }
    self._special_ids = frozenset(self._specials.values())
    longest_first = sorted(self._specials, key=len, reverse=True)
    # One capturing group: `split` puts the matched specials at odd indices.
    self._split = re.compile(f'({"|".join(map(re.escape, longest_first))})')

  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self._encode(text) for text in texts]

  def _encode(self, text: str) -> list[int]:
    ids = []
    for k, part in enumerate(self._split.split(text)):
      if k % 2:
        ids.append(self._specials[part])
      elif part:
        ids.extend(self._sp.encode(part))
    return ids

  def decode(self, ids: list[int]) -> str:
    parts = []
    for special, run in itertools.groupby(ids, self._special_ids.__contains__):
      run = list(run)
      parts.append(
          ''.join(map(self._sp.id_to_piece, run))
          if special
          else self._sp.decode(run)
      )
    return ''.join(parts)

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(i)

  def piece_to_id(self, piece: str) -> int | None:
    i = self._sp.piece_to_id(piece)
    return i if self._sp.id_to_piece(i) == piece else None

  def model_special_ids(self) -> dict[str, int]:
    """The special ids the model's trainer spec states (-1: none)."""
    sp = self._sp
    return {'pad': sp.pad_id(), 'eos': sp.eos_id(), 'bos': sp.bos_id(),
            'unk': sp.unk_id()}


class _HfTokenizers:
  """A Hugging Face `tokenizers.Tokenizer`, with its post-processor unused."""

  def __init__(self, path: pathlib.Path):
    self._tok = tokenizers.Tokenizer.from_file(str(path))
    self._tok.no_padding()
    self._tok.no_truncation()

  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    # No post-processor: BOS/EOS are added by `Tokenizer`, on request only.
    encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
    return [e.ids for e in encodings]

  def decode(self, ids: list[int]) -> str:
    return self._tok.decode(ids, skip_special_tokens=False)

  def id_to_piece(self, i: int) -> str:
    return self._tok.id_to_token(i)

  def piece_to_id(self, piece: str) -> int | None:
    return self._tok.token_to_id(piece)


class Tokenizer:
  """Text <-> token ids; immutable. Build with `load_default`, `from_*`."""

  def __init__(self, backend: _Backend, special_ids: dict[str, int]):
    self._backend = backend
    self._vocab_size = backend.vocab_size()  # Slow to ask `tokenizers`.
    self._special_ids = {name: special_ids[name] for name in _SPECIAL_NAMES}

  @property
  def vocab_size(self) -> int:
    return self._vocab_size

  @property
  def bos_id(self) -> int:
    return self._special_ids['bos']

  @property
  def eos_id(self) -> int:
    return self._special_ids['eos']

  @property
  def pad_id(self) -> int:
    return self._special_ids['pad']

  @property
  def unk_id(self) -> int:
    return self._special_ids['unk']

  def encode(
      self, text: str, add_bos: bool = False, add_eos: bool = False
  ) -> list[int]:
    """Token ids of `text`, optionally with BOS first and EOS last."""
    return self.encode_batch([text], add_bos=add_bos, add_eos=add_eos)[0]

  def encode_batch(
      self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False
  ) -> list[list[int]]:
    """`encode` of each text (unpadded)."""
    if isinstance(texts, str):
      raise TypeError('encode_batch takes a sequence of strings, not a str.')
    prefix = [self.bos_id] if add_bos else []
    suffix = [self.eos_id] if add_eos else []
    return [prefix + ids + suffix for ids in self._backend.encode_batch(texts)]

  def decode(self, ids: Iterable[int]) -> str:
    """The text of `ids`; padding is dropped, other special tokens kept as text.

    Accepts any iterable of ints, e.g. a 1-D numpy array.
    """
    ids = [self._check_id(i) for i in ids]
    return self._backend.decode([i for i in ids if i != self.pad_id])

  def id_to_piece(self, i: int) -> str:
    """The vocabulary entry of id `i` (spaces shown as '▁', bytes '<0x0A>')."""
    return self._backend.id_to_piece(self._check_id(i))

  def _check_id(self, i: int) -> int:
    i = int(i)
    if not 0 <= i < self.vocab_size:
      raise IndexError(f'Token id {i} is outside [0, {self.vocab_size}).')
    return i


def sentencepiece_model_from_gguf(reader: gguf_file.GGUFFile) -> bytes:
  """A serialized SentencePiece `ModelProto` rebuilt from GGUF metadata.

  Only tokenizer model 'llama' (SentencePiece BPE) is supported. Besides
  copying pieces and special ids, two things reproduce transformers exactly:
    * the normalizer is the identity: no NFKC, no dummy prefix unless
      `add_space_prefix`, no collapsing of whitespace; spaces become '▁';
    * llama.cpp stores Gemma's runs of spaces as user-defined tokens of real
      spaces. They become normal pieces spelled with '▁' (as in transformers'
      GGUF loader), so runs longer than the longest token split by BPE merges,
      not greedily. Merge priority is the file order, so score = -index.

  Args:
    reader: the open GGUF file (`checkpoints.gguf.read(path)`).
  """
  path = reader.path

  def field(name: str, default: object = None) -> object:
    return reader.value(f'tokenizer.ggml.{name}', default)

  if field('model') != 'llama':
    raise ValueError(
        f'{path}: tokenizer model {field("model")!r} is not supported; only'
        " 'llama' (SentencePiece BPE) is."
    )
  tokens, token_types = field('tokens'), field('token_type')
  unk_id = field('unknown_token_id', 0)
  model = sp_pb2.ModelProto()
  for i, (token, token_type) in enumerate(zip(tokens, token_types)):
    kind = _GGUF_PIECE_TYPES[gguf.TokenType(token_type)]
    if kind in (_Piece.NORMAL, _Piece.USER_DEFINED) and set(token) == {' '}:
      token, kind = _SPACE * len(token), _Piece.NORMAL
    if i == unk_id:
      kind = _Piece.UNKNOWN
    model.pieces.add(piece=token, score=-float(i), type=kind)

  trainer = model.trainer_spec
  trainer.model_type = sp_pb2.TrainerSpec.BPE
  trainer.vocab_size = len(tokens)
  trainer.byte_fallback = gguf.TokenType.BYTE in token_types
  for name, key in [('unk', 'unknown'), ('bos', 'bos'), ('eos', 'eos'),
                    ('pad', 'padding')]:
    i = field(f'{key}_token_id', -1)
    setattr(trainer, f'{name}_id', i)
    if i >= 0:
      setattr(trainer, f'{name}_piece', tokens[i])

  normalizer = model.normalizer_spec
  normalizer.name = 'identity'
  # llama.cpp's default for SentencePiece vocabularies is a space prefix.
  normalizer.add_dummy_prefix = bool(field('add_space_prefix', True))
  normalizer.remove_extra_whitespaces = False
  normalizer.escape_whitespaces = True
  return model.SerializeToString()


def from_sentencepiece_model(model: bytes) -> Tokenizer:
  """A tokenizer from a serialized SentencePiece model and its special ids."""
  backend = _SentencePiece(model)
  return Tokenizer(backend, backend.model_special_ids())


def default_model_path() -> pathlib.Path:
  """Where `load_default` caches the rebuilt SentencePiece model."""
  return paths.cache_dir() / 'gemma3_270m' / f'tokenizer-v{_BUILDER_VERSION}.model'


def _read_cache(path: pathlib.Path) -> bytes | None:
  """The cached model, or None (with a warning naming the file if it exists
  but is damaged: no checksum file, or a CRC-32 that differs from it)."""
  if not path.exists():
    return None
  problem = paths.checksum_problem(path)
  if problem is None:
    return path.read_bytes()
  logging.warning('Corrupt cache %s (%s); rebuilding it.', path, problem)
  return None


@functools.cache
def load_default() -> Tokenizer:
  """The tokenizer of the embedded Gemma 3 270M.

  Rebuilt from the GGUF once (~2 s) into `default_model_path()`, with its
  CRC-32 beside it (<file>.crc32, written after it); later loads take ~0.4 s.
  A cache that fails its checksum (truncated, overwritten) is named in a
  warning and rebuilt.
  """
  path = default_model_path()
  model = _read_cache(path)
  if model is None:
    model = sentencepiece_model_from_gguf(gguf_file.GGUFFile(paths.embedded_gguf()))
    with paths.atomic_path(path) as tmp:
      tmp.write_bytes(model)
    paths.write_checksum(path)
  return from_sentencepiece_model(model)


def from_hf_dir(path: str | os.PathLike) -> Tokenizer:
  """The tokenizer of a Hugging Face directory.

  Uses `tokenizer.json` (the `tokenizers` library) if present, else
  `tokenizer.model` (SentencePiece). Special ids are read from `config.json`
  (`<name>_token_id`), then `special_tokens_map.json`, then
  `tokenizer_config.json` (`<name>_token`), each overriding the one before;
  Gemma's ids (pad 0, eos 1, bos 2, unk 3) fill in the rest.
  """
  directory = pathlib.Path(path)
  if (directory / 'tokenizer.json').is_file():
    backend = _HfTokenizers(directory / 'tokenizer.json')
  elif (directory / 'tokenizer.model').is_file():
    backend = _SentencePiece((directory / 'tokenizer.model').read_bytes())
  else:
    missing = '' if directory.is_dir() else ' (the directory does not exist)'
    raise FileNotFoundError(
        f'No tokenizer.json or tokenizer.model in {directory}{missing}.'
    )
  return Tokenizer(backend, _hf_special_ids(directory, backend))


def _hf_special_ids(
    directory: pathlib.Path, backend: _Backend
) -> dict[str, int]:
  """Special ids stated by the files of a Hugging Face directory."""
  ids = dict(_GEMMA_SPECIAL_IDS)
  config = read_json(directory / 'config.json')
  for name in _SPECIAL_NAMES:
    value = config.get(f'{name}_token_id')
    if isinstance(value, list):  # e.g. eos_token_id: [1, 106]
      value = value[0] if value else None
    if isinstance(value, int):
      ids[name] = value
  for filename in ('special_tokens_map.json', 'tokenizer_config.json'):
    stated = read_json(directory / filename)
    for name in _SPECIAL_NAMES:
      token = stated.get(f'{name}_token')
      if isinstance(token, dict):  # {"content": "<bos>", "lstrip": false, ...}
        token = token.get('content')
      if isinstance(token, str) and backend.piece_to_id(token) is not None:
        ids[name] = backend.piece_to_id(token)
  return ids


def read_json(path: pathlib.Path) -> dict:
  return json.loads(path.read_text()) if path.is_file() else {}
