"""The ``repro`` subcommands, one module each: the top layer (see README, "Architecture").

Each module defines ``register(subparsers)``, which adds the command's parser (its one-line help from
:data:`repro.cli.HELP`) with ``set_defaults(func=run)``, and ``run(args) -> int``, which checks the options,
calls the library with plain typed arguments and returns the exit status. Library modules import nothing
from here nor from :mod:`repro.cli` (``tests/test_layers.py``).
"""
