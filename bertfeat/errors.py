"""The project's own error type: raised for user mistakes, turned into one `error: ...` line by the CLI."""


class BertfeatError(Exception):
    """A problem the user can fix (bad file, column, flag value, damaged model folder).

    The message names the file / row / column / value and says what to do.
    """
