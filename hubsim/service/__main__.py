"""``python -m hubsim.service``: the hub without the rest of the certstorm command line."""

import argparse
import sys

from hubsim.service import add_hub_arguments, hub_command


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubsim.service",
                                     description="certstorm hub simulator: X.509 CA device authentication over HTTP")
    add_hub_arguments(parser)
    return hub_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
