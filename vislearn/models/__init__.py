"""Models written from scratch, each equal to timm's on the same weights, and their converters.

- ``layers``: patch embedding, attention that can return its weights, MLP, LayerScale, blocks,
  class attention, ``resize_pos_embed``, ``eval_mode``;
- ``vit``, ``deit``, ``cait``, ``xcit``: the transformers (each with ``config_from_timm``);
  ``convnet``: the teacher of notebook 02;
- ``levit``, ``resmlp``, ``convit``: LeViT, ResMLP, ConViT (each with ``config_from_timm``);
  ``patchconvnet``: PatchConvNet (no timm model: its pieces are proven equal to timm's);
- ``convert``: ``from_timm``, ``build`` (a model from a checkpoint's architecture name and config),
  ``parity_table`` (randomize, convert, compare).
"""
