"""The toyfaces world: a procedural face renderer with ground truth (attributes, masks, captions, oracle).

Modules: attributes (schema, sampling), shapes + render (images and masks), captions, pool (pre-rendered
training data), oracle (CLIP-free attribute reader for evaluation). See spec/TOYFACES.md.
"""
