"""The toyfaces world: a procedural face renderer with ground truth, and the nets trained on it.

The world's modules: attributes (schema, sampling), shapes + render (images and masks), captions, pool
(pre-rendered training data), models + training (the toy generator, its autoencoder and inverter), identity
(the ArcFace analogue), clip_training (the guiding toy CLIP), assets (loading the shipped nets). Above it:
``judge`` (what an edit shows; evaluation only) and ``build`` (the stages that make the assets). See
spec/TOYFACES.md and docs/judge.md.
"""
