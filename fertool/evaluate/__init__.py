"""Evaluation: heads on features, metrics, the comparison of methods and its reports.

Owns: the named scikit-learn heads and their safe persistence (``classify``), metrics and
confusion matrices (``metrics``) and report writing (``report``). The comparison of methods that
``compare-baselines`` runs is a pipeline above the stages (:mod:`fertool.compare`).

May import: ``fertool.core``, ``data``, ``faces``, ``models``, ``features``.
"""
