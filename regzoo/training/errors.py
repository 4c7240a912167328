"""The one exception type train.py turns into a one-line error instead of a traceback."""


class TrainingInputError(ValueError):
    """Bad user input: a missing path, a corrupt checkpoint, conflicting settings."""


class UnreadableImageError(TrainingInputError):
    """An image of the training data that cannot be decoded (raised from the data loader, maybe in a worker)."""

    def __init__(self, text: str = ''):
        # a DataLoader worker's exception comes back as ``type('Caught ... Original Traceback ...')``: keep only
        # the original message, the traceback's last line
        if text.startswith(f'Caught {type(self).__name__} '):
            text = text.rstrip().splitlines()[-1].split(': ', 1)[-1]
        super().__init__(text)
