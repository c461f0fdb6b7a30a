"""The hub as a real service: supervisor and worker processes around the engine, devices over HTTP and
over MQTT with mutual TLS, the SQLite store, the state shared between workers and Prometheus metrics.

docs/api.md documents the HTTP API and docs/tls.md the MQTT listener. The face is the command line
(:mod:`hubsim.service.cli`); nothing heavy is imported here, because prometheus-client must not be
imported before the supervisor has set up its multiprocess directory.
"""

from hubsim.service.cli import add_hub_arguments, hub_command

__all__ = ["add_hub_arguments", "hub_command"]
