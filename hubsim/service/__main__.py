"""``python -m hubsim.service``: the hub without the rest of the certstorm command line."""

import sys

from hubsim.argtypes import OneLineErrors
from hubsim.service.cli import add_hub_arguments, hub_command


def main(argv=None) -> int:
    parser = OneLineErrors(
        prog="python -m hubsim.service", description="certstorm hub simulator: X.509 CA device authentication over HTTP"
    )
    add_hub_arguments(parser)
    return hub_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
