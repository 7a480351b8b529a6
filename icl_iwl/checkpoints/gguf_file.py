"""A GGUF file's metadata and tensors, parsed with numpy and struct.

gguf-py's `GGUFReader` makes one numpy view per element of every metadata
array: opening the embedded 270M (a 262,144-token vocabulary: tokens, scores
and types) takes 9-24 s on a 2-core machine. `GGUFFile` reads the same
fields and the same tensor views (memory-mapped, as gguf-py lays them out,
so `gguf.quants.dequantize` takes them) in well under a second. Layout
(little-endian, version 2 or 3): magic 'GGUF', version u32, tensor count
u64, metadata count u64; metadata as (key, value type u32, value); tensor
infos as (name, n_dims u32, dims u64 x n_dims, GGML type u32, offset u64);
tensor data from the next multiple of `general.alignment` (default 32).
"""

import dataclasses
import pathlib
import struct
from typing import Any

import gguf
import numpy as np

_MAGIC = b'GGUF'
_VERSIONS = (2, 3)
_SCALARS = {  # GGUFValueType -> (struct format, numpy dtype).
    gguf.GGUFValueType.UINT8: ('<B', '<u1'), gguf.GGUFValueType.INT8: ('<b', '<i1'),
    gguf.GGUFValueType.UINT16: ('<H', '<u2'), gguf.GGUFValueType.INT16: ('<h', '<i2'),
    gguf.GGUFValueType.UINT32: ('<I', '<u4'), gguf.GGUFValueType.INT32: ('<i', '<i4'),
    gguf.GGUFValueType.FLOAT32: ('<f', '<f4'), gguf.GGUFValueType.BOOL: ('<?', '?'),
    gguf.GGUFValueType.UINT64: ('<Q', '<u8'), gguf.GGUFValueType.INT64: ('<q', '<i8'),
    gguf.GGUFValueType.FLOAT64: ('<d', '<f8'),
}
_TENSOR_DTYPES = {  # Stored as numbers; anything else (quantized, BF16) as bytes.
    gguf.GGMLQuantizationType.F16: np.float16, gguf.GGMLQuantizationType.F32: np.float32,
    gguf.GGMLQuantizationType.F64: np.float64, gguf.GGMLQuantizationType.I8: np.int8,
    gguf.GGMLQuantizationType.I16: np.int16, gguf.GGMLQuantizationType.I32: np.int32,
    gguf.GGMLQuantizationType.I64: np.int64,
}


@dataclasses.dataclass(frozen=True)
class Field:
  """One metadata entry. types: [type] or [ARRAY, element type]."""

  name: str
  types: list[gguf.GGUFValueType]
  value: Any  # str, bool, int, float, or a list of them.

  def contents(self) -> Any:
    return self.value


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One tensor: `shape` in GGML order (innermost first); `data` a read-only
  view of the file, shaped as numpy reads it (reversed `shape`; for
  quantized and BF16 types uint8 with the bytes of a row last)."""

  name: str
  tensor_type: gguf.GGMLQuantizationType
  shape: np.ndarray
  n_elements: int
  data: np.ndarray


class GGUFFile:
  """The parsed file: `fields` (metadata by key, file order), `tensors`
  (file order) and `path`. Raises ValueError for what is not a GGUF file."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path)
    self._mm = np.memmap(self.path, mode='r')
    self._buf = memoryview(self._mm)
    self._at = 0
    if bytes(self._buf[:4]) != _MAGIC:
      raise ValueError('no GGUF magic')
    self._at = 4
    version = self._scalar('<I')
    if version not in _VERSIONS:
      raise ValueError(f'GGUF version {version} (big-endian or unsupported); '
                       f'read are versions {_VERSIONS}, little-endian')
    n_tensors, n_fields = self._scalar('<Q'), self._scalar('<Q')
    self.fields: dict[str, Field] = {}
    for _ in range(n_fields):
      name = self._string()
      kind = gguf.GGUFValueType(self._scalar('<I'))
      if kind == gguf.GGUFValueType.ARRAY:
        item = gguf.GGUFValueType(self._scalar('<I'))
        self.fields[name] = Field(name, [kind, item], self._array(item, self._scalar('<Q')))
      else:
        self.fields[name] = Field(name, [kind], self._value(kind))
    infos = []
    for _ in range(n_tensors):
      name = self._string()
      dims = [self._scalar('<Q') for _ in range(self._scalar('<I'))]
      infos.append((name, dims, gguf.GGMLQuantizationType(self._scalar('<I')),
                    self._scalar('<Q')))
    alignment = self.fields.get('general.alignment')
    alignment = 32 if alignment is None else alignment.value
    start = -(-self._at // alignment) * alignment
    self.tensors = [self._tensor(start, *info) for info in infos]

  def value(self, name: str, default: Any = None) -> Any:
    """The contents of metadata entry `name`, or `default` if the file has none."""
    field = self.fields.get(name)
    return default if field is None else field.value

  def _scalar(self, fmt: str) -> Any:
    (value,) = struct.unpack_from(fmt, self._buf, self._at)
    self._at += struct.calcsize(fmt)
    return value

  def _string(self) -> str:
    n = self._scalar('<Q')
    self._at += n
    return str(self._buf[self._at - n:self._at], 'utf-8')

  def _value(self, kind: gguf.GGUFValueType) -> Any:
    if kind == gguf.GGUFValueType.STRING:
      return self._string()
    if kind not in _SCALARS:
      raise ValueError(f'metadata value type {kind!r} inside an array')
    return self._scalar(_SCALARS[kind][0])

  def _array(self, item: gguf.GGUFValueType, n: int) -> list[Any]:
    if item in _SCALARS:  # One read for the whole array.
      dtype = np.dtype(_SCALARS[item][1])
      values = np.frombuffer(self._buf, dtype, n, self._at)
      self._at += n * dtype.itemsize
      return values.tolist()
    return [self._value(item) for _ in range(n)]

  def _tensor(self, start: int, name: str, dims: list[int],
              kind: gguf.GGMLQuantizationType, offset: int) -> Tensor:
    n = int(np.prod(dims))
    shape = tuple(reversed(dims))
    if kind in _TENSOR_DTYPES:
      dtype, count = np.dtype(_TENSOR_DTYPES[kind]), n
    else:
      block, size = gguf.GGML_QUANT_SIZES[kind]
      dtype, count = np.dtype(np.uint8), n * size // block
      shape = gguf.quants.quant_shape_to_byte_shape(shape, kind)
    begin = start + offset
    if begin + count * dtype.itemsize > len(self._mm):
      raise ValueError(f'tensor {name} ends past the end of the file')
    data = np.ndarray(shape, dtype, self._mm, begin)
    return Tensor(name, kind, np.asarray(dims, np.uint64), n, data)
