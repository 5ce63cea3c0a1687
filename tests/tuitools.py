"""Driving the dashboard under Textual's Pilot in tests: open it on a run, wait until it shows the
run, play a scenario."""

import asyncio

from mmbal_cli.tui.app import DashboardApp
from mmbal_cli.tui.testing import settled


def drive(scenario, run_dir, runs_dir, *, size=(120, 40), **options):
    """``await scenario(pilot, app)`` on a headless dashboard of ``run_dir`` (``size`` columns x rows,
    ``options`` for :class:`DashboardApp`) once it shows the run; returns the app's return value."""
    async def main():
        app = DashboardApp(run_dir, runs_dir, **options)
        async with app.run_test(size=size) as pilot:
            await settled(pilot, app)
            await scenario(pilot, app)
        return app.return_value

    return asyncio.run(main())
