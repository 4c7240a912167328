"""The one exception type train.py turns into a one-line error instead of a traceback."""


class TrainingInputError(ValueError):
    """Bad user input: a missing path, a corrupt checkpoint, conflicting settings."""
