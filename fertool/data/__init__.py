"""Datasets: which files, which labels, which groups, which splits.

Owns: dataset discovery (one folder per class) and the manifest, group keys (SFEW movies,
``--group-regex``), the evaluation protocols and their split hashes (``dataset``), the one
image-folder walker (``walk``), and the
procedural faces of the demo and the tests (``synthetic``).

May import: ``fertool.core``.
"""
