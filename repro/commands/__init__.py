"""The subcommands of the repro command line, one module each: ``register(subparsers)`` and ``run(args) -> int``."""
