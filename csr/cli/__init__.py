"""csr's command lines: absl flags and `main` functions, the only modules that read flags.

Every library module under `csr/` takes plain arguments; each module here parses a command line,
turns it into those arguments and prints the outcome. Each command keeps its flags in its own
`flags.FlagValues`, so several commands can be imported in one process (tests), and has
`run()`, the console-script entry point that `pip install -e .` installs (setup.cfg).

A user's mistake (a bad flag value, a missing file, a run folder that cannot be used) is one line
`<command>: error: ...` on stderr and exit status 2; tracebacks are for bugs. TensorFlow's harmless
start-up lines are hidden unless CSR_VERBOSE=1 (csr.cli.quiet).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from csr.cli.quiet import filter_native_stderr, quiet_tensorflow
from csr.errors import UserError


class UsageError(UserError):
    """A mistake on the command line: printed as one line, exit status 2."""


def run_command(prog: str, flag_values: flags.FlagValues, main, argv=None) -> int:
    """Parse `argv` (without the program name) into `flag_values`, then `main(positional)`.

    Returns main's exit status; a flag error or a UsageError is one line on stderr and status 2.
    `--help` prints the flags' help.
    """
    quiet_tensorflow()
    if argv is None:  # a real command line, not a test calling run([...])
        filter_native_stderr()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(f"usage: {prog} [flags] {getattr(main, 'positional', '')}".rstrip())
        print((main.__doc__ or "").strip())
        print(flag_values.get_help(include_special_flags=False))
        return 0
    flag_values.unparse_flags()
    try:
        positional = flag_values([prog, *argv])[1:]
    except flags.Error as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    try:
        return int(main(positional) or 0)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


def run_script(main) -> None:
    """absl's app.run for a reproduce/ script, with csr's error conventions: a bad flag value or a
    UserError raised by `main` is one line `<script>: error: ...` on stderr and exit status 2."""
    from absl import app

    quiet_tensorflow()
    filter_native_stderr()
    prog = os.path.basename(sys.argv[0])

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            sys.exit(2)

    def guarded(argv):
        try:
            return main(argv)
        except (UserError, app.UsageError) as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2

    app.run(guarded, flags_parser=parse)
