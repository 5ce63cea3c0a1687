"""mmbal's command line (Typer) and, later, its Textual dashboard. Heavy imports stay inside commands."""

from .app import app, main

__all__ = ["app", "main"]
