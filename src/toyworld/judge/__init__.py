"""The toyfaces judge: what an edit really shows, read from pixels. Never used by any training loss.

Modules, bottom up: rule (the region rule: region fidelity, nearest value, collateral PSNR), composed (value
and composed-prompt renders, ceilings' inputs), oracle (the CLIP-free attribute reader) and oracle_training,
dense (the per-pixel reader), calibration / calibration_data / calibration_set / dense_calibration (the oracle
calibrated to the rule on generated edits), shortcuts (attacks on the guiding CLIP and how often they fool it).
Imports only from the world (``src.toyworld.*``) and the framework below it. See docs/judge.md.
"""
