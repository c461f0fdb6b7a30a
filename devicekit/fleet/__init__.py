"""Fleets of device identities at scale: generate once on every core, open anywhere, index by device
number in O(1) (:mod:`.layout` the on-disk format, :mod:`.template` the spliced certificate, :mod:`.generate`
the generator, :mod:`.reader` the reader, :mod:`.derived` fleets every process derives alike)."""

from devicekit.fleet.derived import DEFAULT_SEED, cache_key, derive_fleet
from devicekit.fleet.generate import RecordMaker, generate_fleet
from devicekit.fleet.layout import CA_FILE, CHAIN_FILE, DATA_FILE, META_FILE, device_key_label, record_size
from devicekit.fleet.reader import DeviceIdentity, Fleet
from devicekit.fleet.template import SAN_DNS_SUFFIX, SAN_KINDS, SAN_URI_PREFIX, Template, new_fleet_id, san_names

__all__ = [
    "CA_FILE",
    "CHAIN_FILE",
    "DATA_FILE",
    "DEFAULT_SEED",
    "META_FILE",
    "SAN_DNS_SUFFIX",
    "SAN_KINDS",
    "SAN_URI_PREFIX",
    "DeviceIdentity",
    "Fleet",
    "RecordMaker",
    "Template",
    "cache_key",
    "derive_fleet",
    "device_key_label",
    "generate_fleet",
    "new_fleet_id",
    "record_size",
    "san_names",
]
