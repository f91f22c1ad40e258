"""User-facing errors: the CLI prints them as one line and exits non-zero (no traceback)."""


class UserError(Exception):
    """A problem with the user's input (path, file, name, size). Message says what to do."""
