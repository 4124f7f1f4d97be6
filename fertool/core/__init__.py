"""The base layer: things every stage needs and that know nothing of faces or models.

Owns: the canonical labels and their synonyms (``labels``), fertool's error types (``errors``),
robust image reading and atomic writing (``io``), the environment (cache folders, versions,
threads, the default device: ``env``) and the version (``version``).

May import: the standard library, numpy, Pillow. Nothing else of fertool.
"""
