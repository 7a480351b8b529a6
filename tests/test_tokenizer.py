"""Tokenizer: unit tests, and id parity with transformers' GGUF tokenizer."""

import json
import shutil

import numpy as np
import pytest
import tokenizers
from tokenizers import models as tk_models
from tokenizers import pre_tokenizers, processors

from icl_iwl import paths
from icl_iwl.checkpoints import gguf
from icl_iwl.data import tokenizer

ROUND_TRIP = [
    '',
    'Hello world',
    ' leading space',
    'trailing space ',
    '  two   three    four spaces',
    'tabs\tand\t\ttabs',
    'lines\nand\n\n\nblank lines\r\n',
    '日本語のテキスト、中文句子。',
    '한국어 문장',
    'emoji 😀🎉👍🏽 👨‍👩‍👧‍👦',
    'café naïve résumé Ünïcödé e\u0301',
    'مرحبا بالعالم שלום עולם',
    '12345 3.14159 -42 1e10 1,000,000',
    'def f(x):\n    return x ** 2\n',
    'femp glon troff yomp',
    '\x00\x01 control chars \ufeff\u200b',
    '<start_of_turn>user\nhi<end_of_turn>\n<eos>',
]

# Ids from transformers' GGUF tokenizer (`add_special_tokens=False`).
GOLDEN = {
    'Hello world': [9259, 1902],
    'hello': [23391],
    ' ' * 32: [152, 152],  # BPE merges, not greedy 31 + 1.
    ' ' * 40: [152, 160],
    '<bos>hello<eos>': [2, 23391, 1],
    '<pad><unk><mask>': [0, 3, 4],
    '<unused0><unused99>': [6, 256001],
    '<start_of_turn>user\nhi<end_of_turn>': [105, 2364, 107, 2202, 106],
}


@pytest.fixture(scope='module')
def tok() -> tokenizer.Tokenizer:
  return tokenizer.load_default()


def test_special_ids(tok):
  assert tok.vocab_size == 262144
  assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
  pieces = [tok.id_to_piece(i) for i in range(4)]
  assert pieces == ['<pad>', '<eos>', '<bos>', '<unk>']
  assert tok.id_to_piece(138) == '\u2581\u2581'
  assert tok.id_to_piece(np.int32(107)) == '\n'


@pytest.mark.parametrize('text', sorted(GOLDEN))
def test_golden_ids(tok, text):
  assert tok.encode(text) == GOLDEN[text]


def test_add_bos_and_eos(tok):
  assert tok.encode('Hello world', add_bos=True) == [2, 9259, 1902]
  assert tok.encode('Hello world', add_eos=True) == [9259, 1902, 1]
  assert tok.encode('', add_bos=True, add_eos=True) == [2, 1]
  assert tok.encode_batch(['hello', ''], add_bos=True) == [[2, 23391], [2]]


@pytest.mark.parametrize('text', ROUND_TRIP)
def test_round_trip(tok, text):
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert tok.decode(tok.encode(text, add_bos=True, add_eos=True)) == (
      f'<bos>{text}<eos>'
  )


def test_decode_skips_pad_only(tok):
  assert tok.decode(np.array([0, 0, 2, 9259, 1902, 1, 0])) == (
      '<bos>Hello world<eos>'
  )
  with pytest.raises(IndexError, match='262144'):
    tok.decode([262144])


def test_encode_batch(tok):
  assert tok.encode_batch(ROUND_TRIP) == [tok.encode(t) for t in ROUND_TRIP]
  with pytest.raises(TypeError):
    tok.encode_batch('not a list')


def test_load_default_is_cached(tok):
  assert tokenizer.load_default() is tok
  cached = tokenizer.default_model_path()
  assert cached.is_file()


@pytest.mark.parametrize('make_dir', [False, True])
def test_from_hf_dir_missing(tmp_path, make_dir):
  path = tmp_path / 'nothing_here'
  if make_dir:
    path.mkdir()
  with pytest.raises(FileNotFoundError) as error:
    tokenizer.from_hf_dir(path)
  message = str(error.value)
  assert str(path) in message
  assert 'tokenizer.json' in message and 'tokenizer.model' in message


def test_from_hf_dir_sentencepiece(tok, tmp_path):
  shutil.copy(tokenizer.default_model_path(), tmp_path / 'tokenizer.model')
  hf = tokenizer.from_hf_dir(tmp_path)
  assert (hf.pad_id, hf.eos_id, hf.bos_id, hf.unk_id) == (0, 1, 2, 3)
  texts = ROUND_TRIP + sorted(GOLDEN)
  assert hf.encode_batch(texts, add_bos=True) == tok.encode_batch(
      texts, add_bos=True
  )

  # Later files override earlier ones: config.json < tokenizer_config.json.
  (tmp_path / 'config.json').write_text(
      json.dumps({'eos_token_id': [106, 1], 'bos_token_id': 2})
  )
  assert tokenizer.from_hf_dir(tmp_path).eos_id == 106
  (tmp_path / 'tokenizer_config.json').write_text(
      json.dumps({'eos_token': {'content': '<eos>'}, 'pad_token': '<mask>'})
  )
  hf = tokenizer.from_hf_dir(tmp_path)
  assert (hf.pad_id, hf.eos_id, hf.bos_id, hf.unk_id) == (4, 1, 2, 3)


def test_from_hf_dir_tokenizers_adds_no_bos(tmp_path):
  vocab = {'<pad>': 0, '</s>': 1, '<s>': 2, '<unk>': 3, 'hello': 4, 'world': 5}
  hf = tokenizers.Tokenizer(tk_models.WordLevel(vocab, unk_token='<unk>'))
  hf.pre_tokenizer = pre_tokenizers.Whitespace()
  hf.add_special_tokens(['<pad>', '</s>', '<s>', '<unk>'])
  hf.post_processor = processors.TemplateProcessing(
      single='<s> $A', special_tokens=[('<s>', 2)]
  )
  assert hf.encode('hello').ids == [2, 4]  # The file's own post-processor.
  hf.save(str(tmp_path / 'tokenizer.json'))
  (tmp_path / 'special_tokens_map.json').write_text(json.dumps(
      {'bos_token': '<s>', 'eos_token': '</s>', 'unk_token': '<unk>'}
  ))

  tok = tokenizer.from_hf_dir(tmp_path)
  assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
  assert tok.vocab_size == 6
  assert tok.encode('hello world') == [4, 5]
  assert tok.encode('hello world', add_bos=True, add_eos=True) == [2, 4, 5, 1]
  assert tok.encode('</s>hello') == [1, 4]
  assert tok.id_to_piece(5) == 'world'


# ---------------------------------------------------------------------------
# Parity with transformers (slow: its GGUF tokenizer takes ~35 s to load).

PARITY = ROUND_TRIP + sorted(GOLDEN) + [
    ' ', '\t', '\n', '\r\n', '\n\n\n\n', ' \n ', '\t\t\tx', '\n' * 40,
    '\t' * 40, 'a  b   c    d', '  mixed \t\n whitespace  \t',
    'The quick brown fox jumps over the lazy dog.', 'ALL CAPS TEXT',
    'camelCaseIdentifier snake_case_name kebab-case-name',
    'https://example.com/path?q=1&r=2#frag', 'email@example.org',
    '$100.00 €50 ¥1000 £7', "I'm can't won't y'all",
    '«quotes» “smart” ‘single’',
    '—dash–en…', '0', '007', '2025-11-25', '3,141,592,653', '0.000001',
    '+49 (0)30 1234567', '1/3 + 2/3 = 1', '1st 2nd 3rd 4th', 'x²+y²=z²',
    '我爱北京天安门', 'ひらがな カタカナ', 'Привет, мир!', 'Ελληνικά κείμενα',
    'हिन्दी पाठ', 'ภาษาไทย', 'Tiếng Việt có dấu', 'ﬁ ligature ① ＡＢＣ',
    '\u00a0non-breaking\u00a0space', '𝔹𝕖𝕥𝕒 𝓈𝒸𝓇𝒾𝓅𝓉', '\U0010ffff\U000e0001',
    'a\u2581b', '\u2581\u2581 x', 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz',
    'ab' * 100, 'blorptastic quixotry zembla vrrrk', 'femp glon troff yomp!',
    'Tom glorped the snarfle; the snarfle was glorped by Tom.',
    'for (int i = 0; i < n; ++i) { a[i] += 1; }',
    'SELECT * FROM users WHERE id = 42;', '<div class="x">hi</div>',
    '<b>bold</b> <i>it</i> <code>x</code>', '[multimodal]<start_of_image>',
    '{"key": [1, 2.5, null, true]}', 'import numpy as np\nnp.zeros((3, 4))',
    '#include <stdio.h>\nint main() { return 0; }',
    '$ ls -la ~/.cache | grep x',
    'λx. x + 1', '∀x ∃y: x < y', '<eos><eos>', '<bos> <bos>', '<unk>',
    '< bos>', '<bos', 'Q: Who wrote it?\nA: Tom.\n\nQ: Who?\nA:',
] + [' ' * n for n in (1, 2, 3, 16, 31, 33, 63, 64, 65, 100)] + [
    f'x{" " * n}y' for n in (2, 5, 31, 32, 47, 70)
]


def _assert_same_ids(ours: tokenizer.Tokenizer, reference) -> int:
  """Compares ids with and without BOS; returns how many strings matched."""
  for text in PARITY:
    expected = reference(text, add_special_tokens=False)['input_ids']
    assert ours.encode(text) == expected, repr(text)
    assert ours.encode(text, add_bos=True) == reference(text)['input_ids']
  return len(PARITY)


@pytest.fixture(scope='module')
def rebuilt_model() -> bytes:
  return tokenizer.sentencepiece_model_from_gguf(gguf.read(paths.embedded_gguf()))


@pytest.mark.real_model
def test_parity_gguf_rebuild(real_hf_tokenizer, rebuilt_model):
  reference = real_hf_tokenizer
  assert len(set(PARITY)) >= 100
  ours = tokenizer.from_sentencepiece_model(rebuilt_model)
  assert ours.vocab_size == len(reference) == 262144
  assert _assert_same_ids(ours, reference) == len(PARITY)
  for text in PARITY:
    ids = ours.encode(text, add_bos=True)
    if '<pad>' not in text:
      assert ours.decode(ids) == reference.decode(ids), repr(text)


@pytest.mark.real_model
def test_cache_matches_rebuild(rebuilt_model):
  tokenizer.load_default()  # Writes the cache if missing.
  # A stale cache written by an older builder would differ from a rebuild.
  cached = tokenizer.default_model_path()
  assert cached.read_bytes() == rebuilt_model, f'stale {cached}; delete it'


@pytest.mark.real_model
def test_parity_hf_dir(real_hf_tokenizer, tmp_path):
  reference = real_hf_tokenizer
  reference.save_pretrained(tmp_path)
  assert (tmp_path / 'tokenizer.json').is_file()
  ours = tokenizer.from_hf_dir(tmp_path)
  assert ours.vocab_size == 262144
  assert (ours.pad_id, ours.eos_id, ours.bos_id, ours.unk_id) == (0, 1, 2, 3)
  assert _assert_same_ids(ours, reference) == len(PARITY)
  default = tokenizer.load_default()
  assert ours.encode_batch(PARITY) == default.encode_batch(PARITY)
  assert [ours.decode(ids) for ids in ours.encode_batch(PARITY)] == [
      default.decode(ids) for ids in default.encode_batch(PARITY)
  ]
