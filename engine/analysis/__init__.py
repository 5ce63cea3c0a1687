"""The analysis wing: ``mmbal compare`` and its plot, over runs already on disk.

``load`` reads runs (run.json, config.json, status, summary) and a sweep's members into
:class:`~engine.analysis.load.RunRecord`; ``columns`` chooses the metric columns; ``build`` groups
the records into rows (mean, sample std, paired t-test to a baseline, from ``stats``); ``render``
writes a comparison as a table grid, JSON, CSV or Markdown; ``plot`` draws it with matplotlib.
The wing reads the sweep wing's record (``engine.sweep.record``), never its runner.
"""
