"""User-facing errors: one clear line, a non-zero exit, no traceback."""


class UserError(Exception):
    """An error the user can fix (bad path, unknown name, malformed value).

    The CLI prints ``selfsup: error: <message>`` and exits with status 2.
    The message names the file or field and the fix.
    """


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
