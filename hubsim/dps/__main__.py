"""``python -m hubsim.dps``: DPS without the rest of the certstorm command line."""

import sys

from hubsim.argtypes import OneLineErrors
from hubsim.dps.cli import add_dps_arguments, dps_command


def main(argv=None) -> int:
    parser = add_dps_arguments(OneLineErrors(prog="python -m hubsim.dps", description="certstorm's DPS simulator"))
    return dps_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
