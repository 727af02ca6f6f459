"""The toyfaces build: ``python -m src.toyworld.build`` trains the world's nets in resumable stages, calibrates
the judge and writes the shipped assets with their report.

Modules: stages (the stage runner and CLI), config (BuildConfig and ``--set``), report (the build report and
``python -m src.toyworld.build.report``), hardening / hardening_stage (the guiding CLIP trained against
shortcuts, and the report's robustness figure). The top layer: imports the world, the judge and the evaluation.
"""
