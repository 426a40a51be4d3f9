"""Exceptions raised for bad input; the CLI turns them into one-line messages."""


class TorchalignError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class InputError(TorchalignError, ValueError):
    """A file or argument is missing, corrupt or not what was expected."""
