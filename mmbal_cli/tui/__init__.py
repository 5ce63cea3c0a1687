"""The live dashboard (``mmbal watch``, ``mmbal run --tui``): a Textual app that only reads run files.

* :mod:`.model`: what the dashboard knows about a run (reader + derived views; no Textual).
* :mod:`.chart`: a braille line chart as Rich text; :mod:`.text`: shared text pieces.
* :mod:`.snapshot`: ``--once``, the same content as one Rich renderable.
* :mod:`.app`, :mod:`.screens`, :mod:`.widgets`, ``dashboard.tcss``: the Textual application.
* :mod:`.launch`: ``run_with_dashboard``, training in a child process with the dashboard attached.
* :mod:`.testing`: waiting for what the headless dashboard shows (tests, documentation captures).

Textual is imported only by the modules that need it, so ``--once`` and the model stay light.
"""
