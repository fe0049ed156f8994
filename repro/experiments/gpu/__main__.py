"""``python -m repro.experiments.gpu``: the parser of :mod:`repro.commands.gpu`, run."""

import sys

if __name__ == "__main__":  # the command layer is imported only when run as a command
    from repro.commands.gpu import build_parser, run

    sys.exit(run(build_parser().parse_args()))
