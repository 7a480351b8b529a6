"""The record kinds every dataset is made of, and the in-context prompt format.

One scorer and one trainer read every dataset, so all builders share these
field names:

  document  `{'id', 'text', 'facts'}`: a training document and the ids of the
            facts it states.
  pair      `{'id', 'input', 'output', 'task', 'facts'}`: an IC-Train task pair.
  mc        `{'id', 'prompt', 'choices', 'answer', 'facts', 'kind'}`: a
            multiple-choice probe. The scorer compares log p(choice | prompt);
            choices continue the prompt (a leading space where they continue
            text), are never listed in it, and the prompt has no trailing space.
  ic_probe  `mc` plus `context_inputs`, `context_outputs`, `input`, `task`: an
            IC-Train probe whose `prompt` is `render_context_prompt(...)` of
            its structured context and whose choices are `render_answer` of
            outputs (ending in the end marker `END`).

TFDS stores one feature spec per dataset, so a dataset's features are the union
of the fields of the kinds it holds; a field that a record's kind lacks holds
its empty value ('' / [] / -1).
"""

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

# Field name -> Python type of its value; str lists are `list`.
_FIELD_TYPES: dict[str, type] = {
    'id': str,
    'text': str,
    'facts': list,
    'prompt': str,
    'choices': list,
    'answer': int,
    'kind': str,
    'input': str,
    'output': str,
    'task': str,
    'context_inputs': list,
    'context_outputs': list,
}
_EMPTY: dict[type, Any] = {str: '', list: [], int: -1}


@dataclasses.dataclass(frozen=True)
class RecordKind:
  """The fields one kind of record must carry."""

  name: str
  fields: tuple[str, ...]


DOCUMENT = RecordKind('document', ('id', 'text', 'facts'))
PAIR = RecordKind('pair', ('id', 'input', 'output', 'task', 'facts'))
MC = RecordKind('mc', ('id', 'prompt', 'choices', 'answer', 'facts', 'kind'))
IC_PROBE = RecordKind(
    'ic_probe',
    MC.fields + ('context_inputs', 'context_outputs', 'input', 'task'),
)


def union_fields(kinds: Iterable[RecordKind]) -> tuple[str, ...]:
  """The fields of several kinds, in a fixed order."""
  wanted = {f for kind in kinds for f in kind.fields}
  return tuple(f for f in _FIELD_TYPES if f in wanted)


def features(kinds: Iterable[RecordKind]) -> tfds.features.FeaturesDict:
  """The TFDS features of a dataset holding records of `kinds`."""
  spec = {}
  for name in union_fields(kinds):
    kind = _FIELD_TYPES[name]
    if kind is list:
      spec[name] = tfds.features.Sequence(tfds.features.Text())
    elif kind is int:
      spec[name] = tfds.features.Scalar(dtype=np.int64)
    else:
      spec[name] = tfds.features.Text()
  return tfds.features.FeaturesDict(spec)


def problem(record: Mapping[str, Any], kind: RecordKind) -> str | None:
  """Why `record` is not a valid `kind` record, or None if it is."""
  for name in kind.fields:
    if name not in record:
      return f'missing key {name!r}'
    value, want = record[name], _FIELD_TYPES[name]
    if want is int:
      if isinstance(value, bool) or not isinstance(value, int):
        return f'{name!r} must be an integer, got {type(value).__name__}'
    elif want is list:
      if not isinstance(value, list) or not all(
          isinstance(v, str) for v in value):
        return f'{name!r} must be a list of strings'
    elif not isinstance(value, str):
      return f'{name!r} must be a string, got {type(value).__name__}'
  if kind in (MC, IC_PROBE):
    if not record['choices']:
      return "'choices' is empty"
    for i, choice in enumerate(record['choices']):
      if not choice.strip():
        return f'choice {i} is empty'
      if choice in record['choices'][:i]:
        return f'choice {i} repeats {choice!r}'
    if not 0 <= record['answer'] < len(record['choices']):
      return (f"'answer' {record['answer']} is out of range for "
              f"{len(record['choices'])} choices")
  if kind is IC_PROBE and (
      len(record['context_inputs']) != len(record['context_outputs'])):
    return "'context_inputs' and 'context_outputs' differ in length"
  return None


def complete(
    record: Mapping[str, Any], fields: Sequence[str]
) -> dict[str, Any]:
  """`record` with every field of `fields`, missing ones empty.

  Raises:
    ValueError: if `record` has a field outside `fields`.
  """
  extra = set(record) - set(fields)
  if extra:
    raise ValueError(f'Record {record.get("id")!r} has unknown fields {extra}.')
  return {
      name: record.get(name, _EMPTY[_FIELD_TYPES[name]]) for name in fields
  }


def decode(example: Mapping[str, Any]) -> dict[str, Any]:
  """A record read from a TFDS data source as Python str / list / int."""
  out = {}
  for name, value in example.items():
    if isinstance(value, bytes):
      out[name] = value.decode('utf-8')
    elif isinstance(value, (list, tuple, np.ndarray)):
      out[name] = [
          v.decode('utf-8') if isinstance(v, bytes) else v for v in value
      ]
    elif isinstance(value, np.generic):
      out[name] = value.item()
    else:
      out[name] = value
  return out


# Ends every IC-Train output, in context and in the target, so a model learns
# to stop. One Gemma token, never merged with what follows: the examples are
# not separated by a blank line, since '\n\n' is a token of its own.
END = '\n'


def render_answer(output: str) -> str:
  """An IC-Train output as it continues 'Output:' (the target or a choice)."""
  return f' {output}{END}'


def render_context_prompt(
    context_inputs: Sequence[str], context_outputs: Sequence[str], input_: str
) -> str:
  """The IC-Train prompt: k solved examples, then the target input.

      Input: the red dog
      Output: femp glon
      Input: the small cat
      Output:

  Each example is exactly what its target was: `Output:` continued by
  `render_answer(output)`, the output with a leading space and `END`.
  """
  if len(context_inputs) != len(context_outputs):
    raise ValueError('context_inputs and context_outputs differ in length.')
  solved = ''.join(f'Input: {i}\nOutput:{render_answer(o)}'
                   for i, o in zip(context_inputs, context_outputs))
  return f'{solved}Input: {input_}\nOutput:'


def normalize(text: str) -> str:
  """Whitespace-collapsed text, for verbatim-leakage checks."""
  return ' '.join(text.split())
