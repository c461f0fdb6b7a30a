"""The device side of certstorm: custodians and devices of the supply-chain PKI, fleets of millions of
device identities on disk, and the clients a device or an operator uses to reach a hub (HTTP two-step,
MQTT over mutual TLS, the management API), with the reconnect backoff of real device SDKs.

The hub (:mod:`hubsim`) never imports this package: the hub cannot reach a device's private key.
"""
