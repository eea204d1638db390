"""Errors users see. A ``SpecError`` is bad input found before anything runs: the CLI prints
its message as one line and exits 2, leaving the store untouched."""


class SpecError(ValueError):
    """Bad user input; the message names the field and what is allowed."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")
