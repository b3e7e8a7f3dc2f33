"""The application layer: the ``suimseg`` command line and what it runs.

``config`` (the typed :class:`~suimseg.app.config.TrainConfig`), ``recipe`` (the design's
training run, composed from the library's parts), ``evaluate`` (``suimseg evaluate``),
``demo`` (``suimseg demo``) and ``cli`` (argparse → typed config → library calls).

The library packages (``models``, ``losses``, ``data``, ``metrics``, ``optim``, ``engine``,
``inference``) never import this package; ``tests/test_import_layers.py`` checks it.
"""
