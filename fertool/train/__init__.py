"""Fine-tuning: the training loop and everything a run folder holds.

Owns: the loop and its configuration (``loop``), augmentation (``augment``), checkpoints
(``checkpoint``), Gedeon's angle monitor and its plots (``angles``, ``angles_plot``) and the
training curves (``plots``).

May import: ``fertool.core``, ``data``, ``faces``, ``models``, ``features``, ``evaluate``
(metrics and reports of a run).
"""
