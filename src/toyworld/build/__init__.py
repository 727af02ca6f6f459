"""The toyfaces build: ``python -m src.toyworld.build`` trains the world's nets in resumable stages, calibrates
the judge and writes the shipped assets with their report.

Modules: cli (the command line), stages (the stage runner), config (BuildConfig and ``--set``), export (the
shipped fp16 assets and their manifest), report (the build report and ``python -m src.toyworld.build.report``),
hardening / hardening_stage (the guiding CLIP trained against shortcuts, and the report's robustness figure).
The top layer: imports the world, the judge and the evaluation.
"""
