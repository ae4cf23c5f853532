"""The errors the command line turns into a one-line message and exit status 1.

They live apart from the code that raises them so that a data command, which catches
them through `tools/cli/common.py`, does not import the recipe, run and publish code: a
build's code digest (`tools/run/codehash.py`) is then the data code it runs, and editing
a recipe check does not rebuild data.
"""

from __future__ import annotations


class RecipeError(Exception):
    """A problem with a recipe file or name; the message says which file and line."""


class LaunchError(Exception):
    """A step of a run failed; the message says which and where its log is."""


class PublishError(Exception):
    """The Hub could not be used or refused a step; the message says which (never with the token)."""
