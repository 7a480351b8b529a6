"""Logical axis names, the default mesh and the default rules (no jax here).

Configs, the model and the sharding code all name axes through these
constants, so a config file can state its mesh and rules without importing
jax. Parameters carry the weight axes, activations the `ACT_*` axes; the
rules map each logical axis to mesh axes (None: replicated).
"""

# Weight axes.
VOCAB = 'vocab'
EMBED = 'embed'
HEADS = 'heads'
KV_HEADS = 'kv_heads'
HEAD_DIM = 'head_dim'
MLP = 'mlp'
NORM = 'norm'
LAYERS = 'layers'  # The stacked layers of a scanned model (never sharded).
# Activation axes.
BATCH = 'batch'
LENGTH = 'length'
ACT_EMBED = 'act_embed'
ACT_HEADS = 'act_heads'
ACT_MLP = 'act_mlp'
# The output projection: hidden states gathered over FSDP (a batch split over
# 'data' only), the table and the logits split over the vocabulary instead,
# so the [V, D] table is never gathered whole (Gemma 3 12B's: 4 GiB in f32).
LOGITS_BATCH = 'logits_batch'
LOGITS_VOCAB = 'logits_vocab'

# Mesh axes.
DATA = 'data'
FSDP = 'fsdp'
TENSOR = 'tensor'
MESH_AXES = (DATA, FSDP, TENSOR)

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Pure data parallelism over every device (-1: all remaining devices);
# configs override the sizes, e.g. ((DATA, 1), (FSDP, 8), (TENSOR, 1)).
DEFAULT_MESH = ((DATA, -1), (FSDP, 1), (TENSOR, 1))

# FSDP shards weights over 'fsdp' and the batch over ('data', 'fsdp');
# tensor parallelism splits heads, MLP and vocabulary over 'tensor'.
DEFAULT_RULES: Rules = (
    (BATCH, (DATA, FSDP)),
    (LENGTH, None),
    (VOCAB, TENSOR),
    (EMBED, FSDP),
    (HEADS, TENSOR),
    (KV_HEADS, TENSOR),
    (HEAD_DIM, None),
    (MLP, TENSOR),
    (NORM, None),
    (LAYERS, None),
    (ACT_EMBED, None),
    (ACT_HEADS, TENSOR),
    (ACT_MLP, TENSOR),
    (LOGITS_BATCH, DATA),
    (LOGITS_VOCAB, (FSDP, TENSOR)),
)
LOGICAL_AXES = tuple(name for name, _ in DEFAULT_RULES)
