"""The device side: the supply-chain PKI factory, fleets of device identities and the Locust swarm.

Locust imports every ``*.py`` under this folder whose name does not start with ``_`` as a locustfile,
so every helper module here is underscore-prefixed and the swarm lives in ``swarm.py`` alone.
"""
