"""The live dashboard (``mmbal watch``, ``mmbal run --tui``): a Textual app that only reads run files.

What the dashboard knows about a run (no Textual):

* :mod:`.reader`: ``RunReader`` reads what changed in a run directory as a ``Delta``.
* :mod:`.model`: ``RunModel`` folds the deltas in and composes the views below.
* :mod:`.progress`: steps per epoch, epoch in progress, elapsed time over segments, time left.
* :mod:`.metric_index`: per split, metric key -> points, indexed incrementally.
* :mod:`.chart_series`: which series each chart tab draws; :mod:`.panel`: the per-modality rows.
* :mod:`.run_events`: events and resumes as rows and chart markers.
* :mod:`.meanings`: what a method's ``coef/``, ``score/``, ``method/`` values mean (its registration).
* :mod:`.run_notices`: the notices explaining a damaged or dead run.
* :mod:`.formatting`: lenient reading of JSON values; numbers, durations and sizes as short text.
* :mod:`.advice_reader`, :mod:`.advice_model`: an ``mmbal advise`` (``advice.json`` and its runs) as
  the advice screen shows it: the diagnosis, each stage's rows, the recommendation.

How it is drawn:

* :mod:`.chart`: a braille line chart as Rich text; :mod:`.text`: text pieces shared by widgets and snapshot.
* :mod:`.snapshot`: ``--once``, the same content as one Rich renderable.
* :mod:`.advice_text`: the advice screen's text, shared with ``watch --advice NAME --once``.
* :mod:`.app`, :mod:`.screens`, :mod:`.widgets`, ``dashboard.tcss``: the Textual application.
* :mod:`.launch`: ``run_with_dashboard``, training in a child process with the dashboard attached.
* :mod:`.testing`: waiting for what the headless dashboard shows (tests, documentation captures).

Textual is imported only by the modules that need it, so ``--once`` and the model stay light.
"""
