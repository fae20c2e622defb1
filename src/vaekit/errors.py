"""The one exception type a user should ever see from vaekit.

A `VaekitError` carries a single line that names the problem and the fix. The CLI prints it and exits with code 2;
anything else escaping is a bug, and shows a traceback so it can be reported.
"""


class VaekitError(Exception):
    """Bad input or an unusable run folder, described in one line for a person to act on."""
