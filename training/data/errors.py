"""The one error bad data raises: the message names the source and the problem."""


class DataError(ValueError):
    """Unreadable source, missing column, too few classes, an empty split, ..."""
