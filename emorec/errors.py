"""The one exception that tells a user their input cannot be used."""


class InputError(ValueError):
    """Bad user input: a missing, empty, corrupt or unsupported file, or a bad option."""
