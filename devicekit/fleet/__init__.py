"""Fleets of device identities at scale: generate once on every core, open anywhere, index by device
number in O(1) (:mod:`.layout` the on-disk format, :mod:`.template` the spliced certificate, :mod:`.generate`
the generator, :mod:`.reader` the reader, :mod:`.derived` fleets every process derives alike, :mod:`.tokens`
fleets whose device keys live in a PKCS#11 token)."""

from devicekit.fleet.derived import DEFAULT_SEED, cache_key, derive_fleet
from devicekit.fleet.generate import RecordMaker, generate_fleet
from devicekit.fleet.layout import CA_FILE, CHAIN_FILE, DATA_FILE, META_FILE, device_key_label, record_size
from devicekit.fleet.reader import DeviceIdentity, Fleet
from devicekit.fleet.template import SAN_DNS_SUFFIX, SAN_KINDS, SAN_URI_PREFIX, Template, new_fleet_id, san_names
from devicekit.fleet.tokens import (
    CERTIFICATES_FILE,
    NO_TOKEN_KEYS_OVER_MQTTS,
    REQUESTS_FILE,
    TOKEN_PREFIX,
    TokenFleet,
    assemble_token_fleet,
    make_device_keys,
    read_requests,
)

__all__ = [
    "CA_FILE",
    "CERTIFICATES_FILE",
    "CHAIN_FILE",
    "DATA_FILE",
    "DEFAULT_SEED",
    "META_FILE",
    "NO_TOKEN_KEYS_OVER_MQTTS",
    "REQUESTS_FILE",
    "SAN_DNS_SUFFIX",
    "SAN_KINDS",
    "SAN_URI_PREFIX",
    "TOKEN_PREFIX",
    "DeviceIdentity",
    "Fleet",
    "RecordMaker",
    "Template",
    "TokenFleet",
    "assemble_token_fleet",
    "cache_key",
    "derive_fleet",
    "device_key_label",
    "generate_fleet",
    "make_device_keys",
    "new_fleet_id",
    "read_requests",
    "record_size",
    "san_names",
]
