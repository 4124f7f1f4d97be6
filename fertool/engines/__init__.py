"""Engines that run the pipelines beyond one process: Ray Data for ``predict`` and ``embed``.

Owns: the Ray engine (``ray_engine``: a local or remote Ray instance, the face stage as a CPU
actor pool, the model in an actor pool that loads it once per actor, results as Parquet shards),
planning without reading (``plan``: the walk written as Parquet plan files of paths only, local
paths and fsspec URLs) and the shards (``shards``: one writer on the driver, exactly one row group
per input whatever the retries, resume, the merge to CSV/JSONL in walk order), and the embedding
run on Ray (``ray_embed``: the same CPU actors, the backbone built once per actor, the local
engine's EmbeddingSet).

May import: every layer below the pipelines (``fertool.core`` ... ``fertool.serve``) and the
pipelines ``fertool.predict`` (row building, output formats, the summary) and
``fertool.features.embed``. Nothing below imports this package; the CLI reaches it through lazy
imports, and Ray itself (``pip install fertool[ray]``) is only imported when an engine runs.
"""
