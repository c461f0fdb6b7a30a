"""The device swarm: ``locust -f loadgen`` (or ``certstorm swarm``) drives many devices of a fleet
against a hub or broker.

Locust imports every ``*.py`` under this folder whose name does not start with ``_`` as a locustfile, so
the swarm's locustfile is ``swarm.py`` alone and its helpers are underscore-prefixed.
"""
