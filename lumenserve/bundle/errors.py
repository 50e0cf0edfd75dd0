"""The one exception the bundle reader raises."""


class BundleError(ValueError):
    """A bundle was refused: the message names the file and the problem."""
