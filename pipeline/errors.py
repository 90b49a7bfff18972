"""The one exception type for mistakes a user can make.

A `UserError` carries a single line that names the offending input (file, field,
key) and the fix. The CLI prints it without a traceback and exits with status 2;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one actionable line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
