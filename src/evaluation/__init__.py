"""Evaluation of edits: everything that scores a trained mapper, in one place.

- ``generic``: domain-independent metrics with the training CLIP (``edit_test_set``, ``clip_metrics``) and
  ``evaluate``, the final evaluation behind ``python -m src.eval`` and the end of training;
- ``grids``: the source | edited image grid (``pair_grid``), shared by ``evaluate`` and the grid callback;
- ``real``: ``RealEvaluator`` for the real domains (ffhq, afhq_*): evaluation CLIP, identity, LPIPS, FID/KID;
- ``toyfaces``: ``ToyfacesEvaluator`` for the toyfaces world, judged by its judge (``src.toyworld.judge``: the
  region rule and the oracle) against the ideal edit;
- ``guide``: is the guiding CLIP fooled by the edits, and does the run's own loss prefer a fair ideal edit?

A domain picks its evaluator with ``domain.evaluator._target_``. Import the submodules directly: this package
re-exports nothing, so importing one (e.g. ``grids`` from the callbacks) never pulls in the heavy ones, and the
dependency stays one-way (callbacks -> evaluation -> losses / models / the toy world and its judge, never back;
the build, ``src.toyworld.build``, sits above).
"""
