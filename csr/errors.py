"""The one base class of the errors a user can fix: what a command prints as one line.

A `UserError` is a mistake in the user's inputs or surroundings (a flag value, a data file, a
weights file, a folder that cannot be written, a run folder that holds another computation, no
network for a download): its message names the file or flag and what to do, and the command lines
print it as `<command>: error: <message>` with exit status 2. Every other exception is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message says which file or flag, and what to do."""
