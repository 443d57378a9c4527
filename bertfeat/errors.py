"""The project's own error types: raised for user mistakes, turned into one `error: ...` line by the CLI.

A program catches ``BertfeatError`` for all of them, or one subclass for one kind of problem::

    BertfeatError
    ├── ConfigError (also a ValueError)   a parameter / flag value that is wrong whatever the data
    ├── DataError                         an input file or table: missing column, empty texts, bad labels
    ├── ModelFolderError                  a model folder or encoder folder that is damaged, foreign or unsafe
    └── CacheError                        the vector cache: not writable, not a cache, in use
"""


class BertfeatError(Exception):
    """A problem the user can fix (bad file, column, flag value, damaged model folder).

    The message names the file / row / column / value and says what to do.
    """


class ConfigError(BertfeatError, ValueError):
    """A parameter value that is wrong whatever the data (``cv=1``, ``test_size=2``, an unknown head)."""


class DataError(BertfeatError):
    """Input data that cannot be used as given: a missing file or column, empty texts, unusable labels."""


class ModelFolderError(BertfeatError):
    """A model folder (or a local encoder folder) that is damaged, of another format, or unsafe to load."""


class CacheError(BertfeatError):
    """The vector cache cannot be read, written or pruned as asked."""
