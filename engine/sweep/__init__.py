"""The sweep wing: ``mmbal sweep``, one ordinary run per (method, seed[, ``--grid`` values]), N at a
time, resumed by running it again (the README's "Sweeps and comparisons").

``layout`` names the sweep's directory and its members' runs; ``grid`` parses ``--grid KEY=V1,V2``
into axes; ``members`` expands methods x seeds x grid values into members with their overrides and
validated configs; ``attempts`` reads a member's existing runs and decides what to do about them;
``plan`` puts the two together; ``record`` is what a sweep writes and reads (``sweep.json``);
``runner`` starts the members as subprocesses. The runner is handed the command line that starts a
run, so the engine does not depend on the CLI.
"""
