"""The Device Provisioning Service simulator: enrollment groups over CAs registered and proven as on the
hub, allocation of devices over linked hubs, and DPS's MQTT and HTTP registration -- the same engine and
service as the hub (docs/dps.md). The face is the command line; nothing heavy is imported here."""

from hubsim.dps.cli import add_dps_arguments, dps_command

__all__ = ["add_dps_arguments", "dps_command"]
