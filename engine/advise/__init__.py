"""``mmbal advise``: diagnose modality imbalance on the user's data and choose a method on validation data.

``config`` holds the options (``AdviseConfig``, ``--budget`` parsing); ``diagnose`` turns the probe runs
(``joint`` and ``unimodal`` per modality) into per-modality figures and a one-sentence verdict;
``halving`` is the successive-halving schedule and its budget fit; ``stages`` builds each stage's
members as sweep members (ordinary runs, resumable by re-running) and runs them through an executor
(the sweep runner's subprocesses, or in-process); ``reading`` is the only place that reads a run's
figures (validation while choosing, test only for ``--apply``); ``report`` ranks the candidates and
renders the report; ``record`` is ``advice.json``; ``advisor`` puts them together.
"""
