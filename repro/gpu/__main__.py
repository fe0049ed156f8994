"""``python -m repro.gpu``: the parser of :mod:`repro.commands.gpu`, run."""

import sys

from repro.commands.gpu import build_parser, run

if __name__ == "__main__":
    sys.exit(run(build_parser().parse_args()))
