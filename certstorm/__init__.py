"""certstorm: load testing and capacity planning for mass IoT device authentication with X.509 CA
certificates. The product's command line (:mod:`certstorm.cli`), the capacity model, the demo and the
run orchestration; the hub is :mod:`hubsim`, the device side :mod:`devicekit`, the swarm :mod:`loadgen`."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("certstorm")
except PackageNotFoundError:  # pragma: no cover - run from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
