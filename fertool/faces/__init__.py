"""The face stage: from a decoded image to aligned face crops.

Owns: the face settings (``FaceConfig``), detection, the choice of face, five-point alignment,
the fallback crop (``stage``, ``align``), the on-disk face cache (``cache``) and contact sheets
(``contact``).

May import: ``fertool.core``, ``fertool.data``.
"""
