"""Fine-tuning: the training loop and everything a run folder holds.

Owns: the run's configuration (``config``), its plan and data (``plan``: what ``--dry-run``
prints and the run uses), the run folder (``rundir``: layout, config, checkpoints, best model,
report), the loop (``loop``), augmentation (``augment``), checkpoints (``checkpoint``),
Gedeon's angle monitor and its plots (``angles``, ``angles_plot``) and the training curves
(``plots``).

May import: ``fertool.core``, ``data``, ``faces``, ``models``, ``features``, ``evaluate``
(metrics and reports of a run).
"""
