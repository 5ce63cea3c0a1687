"""The bench wing: speed figures for ``mmbal bench`` and BENCHMARKS.md.

``loops`` holds the contenders, each one epoch of training per call on the same data and model
(mmbal's trainer, a hand-written loop, a reference-style loop); ``figures`` times them and each
registered method against ``joint`` (:func:`~engine.bench.figures.run_bench`).
"""
