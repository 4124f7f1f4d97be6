"""The face stage: from a decoded image to aligned face crops.

Owns: the face settings (``config``: ``FaceConfig``), the result types (``types``), the
detectors behind a small registry (``detectors``: MTCNN today), the choice of face and the
fallback crop (``stage``), five-point alignment (``align``), the on-disk face cache (``cache``),
contact sheets (``contact``) and the dataset-level extraction that ``fertool faces`` and the demo
run (``extract``: crops, CSV, contact sheet, summary).

May import: ``fertool.core``, ``fertool.data``.
"""
