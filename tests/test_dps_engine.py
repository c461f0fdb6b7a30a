"""The provisioning engine without I/O: refusals first (no group, a disabled group, a revoked CA, a CN that
is no registration id, configuration that cannot work), then the allocation policies -- hashed stable
for a device, evenly to the fewest, static -- re-registration, and what a hub that is down changes."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from chainkit import CA, authenticate, der, engine, trust

from devicekit.dps import POLL, parse_response
from devicekit.mqtts import MqttsFailure
from hubsim import AuthError, EnginePolicy, MemoryRegistry
from hubsim.dps.engine import LinkedHub, ProvisioningEngine, check_hub, check_registration_id, hashed_order
from hubsim.dps.topics import POLL_TOPIC, parse_topic, response_topic

HUBS = ("hub-a", "hub-b", "hub-c")


@pytest.fixture
def setup():
    root = CA("Company-X")
    factory = CA("Factory-Y", parent=root, path_length=0)
    auth = engine()
    ca_id = trust(auth, root)
    dps = ProvisioningEngine(auth)
    for name in HUBS:
        dps.set_hub(LinkedHub(name, f"http://{name}:8080"))
    return dps, ca_id, root, factory


def group(dps, ca_id, allocation="hashed", **extra):
    g = dps.check_group("fleet", {"ca": ca_id, "allocation": allocation, "hubs": list(HUBS), **extra})
    dps.set_group(g)
    return g


def chain(factory: CA, device_id: str) -> list[bytes]:
    _key, cert = factory.issue(device_id)
    return [der(cert), der(factory.cert)]


# -- refusals -------------------------------------------------------------------------------------------------
def test_a_verified_ca_without_a_group_is_refused(setup):
    dps, _ca_id, _root, factory = setup
    admission = dps.attest(chain(factory, "dev-1"), "dev-1")
    with pytest.raises(AuthError) as caught:
        dps.group_for(admission.ca)
    assert caught.value.code == "enrollment_missing"


def test_a_chain_to_no_verified_ca_is_refused(setup):
    dps, ca_id, _root, _factory = setup
    group(dps, ca_id)
    stranger = CA("Stranger")
    with pytest.raises(AuthError) as caught:
        dps.attest(chain(CA("Factory-Z", parent=stranger, path_length=0), "dev-1"), "dev-1")
    assert caught.value.code == "chain_untrusted"


def test_a_disabled_group_refuses(setup):
    dps, ca_id, _root, factory = setup
    group(dps, ca_id, enabled=False)
    admission = dps.attest(chain(factory, "dev-1"), "dev-1")
    with pytest.raises(AuthError) as caught:
        dps.group_for(admission.ca)
    assert caught.value.code == "enrollment_disabled"


def test_a_revoked_ca_refuses(setup):
    dps, ca_id, _root, factory = setup
    group(dps, ca_id)
    dps.auth.revoke(ca_id)
    with pytest.raises(AuthError) as caught:
        dps.attest(chain(factory, "dev-1"), "dev-1")
    assert caught.value.code == "cert_revoked"


@pytest.mark.parametrize("cn", ["has space", "ends.", "dev*1", "ünïcode", "slash/in"])
def test_a_cn_that_is_no_registration_id_is_refused(setup, cn):
    dps, ca_id, _root, factory = setup
    group(dps, ca_id)
    with pytest.raises(AuthError) as caught:
        dps.attest(chain(factory, cn), cn)
    assert caught.value.code == "registration_id_invalid"


def test_client_id_other_than_the_cn_is_refused(setup):
    dps, ca_id, _root, factory = setup
    group(dps, ca_id)
    with pytest.raises(AuthError) as caught:
        dps.attest(chain(factory, "dev-1"), "dev-2")
    assert caught.value.code == "device_id_mismatch"


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        ({"ca": "00" * 32, "hubs": ["hub-a"]}, "ca_not_found"),
        ({"ca": 5, "hubs": ["hub-a"]}, "malformed_input"),
        ({"allocation": "random", "hubs": ["hub-a"]}, "malformed_input"),
        ({"reprovision": "always", "hubs": ["hub-a"]}, "malformed_input"),
        ({"hubs": []}, "malformed_input"),
        ({"hubs": ["nowhere"]}, "hub_not_found"),
        ({"allocation": "static", "hubs": ["hub-a", "hub-b"]}, "malformed_input"),
        ({"enabled": "yes", "hubs": ["hub-a"]}, "malformed_input"),
    ],
)
def test_a_group_that_cannot_work_is_refused(setup, doc, code):
    dps, ca_id, _root, _factory = setup
    doc = {"ca": ca_id, **doc}
    with pytest.raises(AuthError) as caught:
        dps.check_group("fleet", doc)
    assert caught.value.code == code
    assert dps.groups == {}


def test_two_groups_cannot_share_a_ca(setup):
    dps, ca_id, _root, _factory = setup
    group(dps, ca_id)
    with pytest.raises(AuthError) as caught:
        dps.check_group("other", {"ca": ca_id, "hubs": ["hub-a"]})
    assert caught.value.code == "enrollment_group_conflict"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "not a url",
        "http://",
        5,
        "http://[::1",
        "http://[zz]/",
        "http://a]b/",
        "http://h:99999",
        "http://h:0",
    ],
)
def test_a_hub_without_an_http_url_is_refused(url):
    with pytest.raises(AuthError) as caught:
        check_hub("hub-a", {"url": url})
    assert caught.value.code == "malformed_input"


def test_registration_id_rule():
    for good in ("a", "dev-1", "Dev.1_2:3", "x" * 128, "ends-"):
        assert check_registration_id(good) == good
    for bad in ("", "ends_", "x" * 129, "a b"):
        with pytest.raises(AuthError):
            check_registration_id(bad)


# -- allocation -----------------------------------------------------------------------------------------------
def test_hashed_is_stable_for_a_device_and_spreads_a_fleet(setup):
    dps, ca_id, _root, _factory = setup
    g = group(dps, ca_id)
    placed = {f"dev-{i}": dps.allocate(g, f"dev-{i}", None, {}).hub for i in range(3000)}
    assert all(dps.allocate(g, d, None, {"hub-a": 10**6}).hub == h for d, h in placed.items())  # loads don't matter
    counts = Counter(placed.values())
    assert set(counts) == set(HUBS) and min(counts.values()) > 900, counts


def test_hashed_moves_only_the_devices_of_a_removed_hub(setup):
    ids = [f"dev-{i}" for i in range(2000)]
    before = {d: hashed_order(d, HUBS)[0] for d in ids}
    after = {d: hashed_order(d, HUBS[:2])[0] for d in ids}
    moved = [d for d in ids if before[d] != after[d]]
    assert moved and all(before[d] == "hub-c" for d in moved)


def test_evenly_goes_to_the_fewest(setup):
    dps, ca_id, _root, _factory = setup
    g = group(dps, ca_id, allocation="evenly")
    loads = {"hub-a": 5, "hub-b": 3, "hub-c": 3}
    assert dps.allocate(g, "dev-1", None, loads).hub == "hub-b"  # ties by name
    loads = {}
    for i in range(30):
        hub = dps.allocate(g, f"dev-{i}", None, loads).hub
        loads[hub] = loads.get(hub, 0) + 1
    assert sorted(loads.values()) == [10, 10, 10]


def test_static_goes_to_its_one_hub(setup):
    dps, ca_id, _root, _factory = setup
    g = dps.check_group("fleet", {"ca": ca_id, "allocation": "static", "hubs": ["hub-c"]})
    assert {dps.allocate(g, f"dev-{i}", None, {}).hub for i in range(50)} == {"hub-c"}


def test_re_registration_keeps_the_hub_unless_the_policy_reassigns(setup):
    dps, ca_id, _root, _factory = setup
    never = group(dps, ca_id, allocation="evenly")
    first = dps.allocate(never, "dev-1", None, {})
    assert first == ("hub-a", "initialAssignment")
    assert dps.allocate(never, "dev-1", "hub-a", {"hub-a": 100}) == ("hub-a", "unchanged")
    reassign = group(dps, ca_id, allocation="evenly", reprovision="reassign")
    assert dps.allocate(reassign, "dev-1", "hub-a", {"hub-a": 100, "hub-b": 1}) == ("hub-c", "reassigned")
    assert dps.allocate(reassign, "dev-1", "hub-a", {"hub-a": 1, "hub-b": 1, "hub-c": 1}) == ("hub-a", "unchanged")


def test_a_hub_that_left_the_group_is_left_by_its_devices(setup):
    dps, ca_id, _root, _factory = setup
    g = dps.check_group("fleet", {"ca": ca_id, "allocation": "evenly", "hubs": ["hub-b"]})
    assert dps.allocate(g, "dev-1", "hub-a", {}) == ("hub-b", "reassigned")


# -- a hub that is down ---------------------------------------------------------------------------------------
def test_evenly_allocates_among_the_hubs_that_are_up(setup):
    dps, ca_id, _root, _factory = setup
    g = group(dps, ca_id, allocation="evenly")
    assert dps.allocate(g, "dev-1", None, {}, unavailable={"hub-a"}).hub == "hub-b"
    with pytest.raises(AuthError) as caught:
        dps.allocate(g, "dev-1", None, {}, unavailable=set(HUBS))
    assert caught.value.code == "hub_unavailable"


def test_hashed_and_static_refuse_rather_than_move_a_device(setup):
    dps, ca_id, _root, _factory = setup
    g = group(dps, ca_id)
    hub = dps.allocate(g, "dev-1", None, {}).hub
    with pytest.raises(AuthError) as caught:
        dps.allocate(g, "dev-1", None, {}, unavailable={hub})
    assert caught.value.code == "hub_unavailable"
    static = dps.check_group("fleet", {"ca": ca_id, "allocation": "static", "hubs": ["hub-a"]})
    with pytest.raises(AuthError):
        dps.allocate(static, "dev-1", None, {}, unavailable={"hub-a"})


def test_a_kept_device_whose_hub_is_down_waits(setup):
    dps, ca_id, _root, _factory = setup
    g = group(dps, ca_id, allocation="evenly")
    with pytest.raises(AuthError) as caught:
        dps.allocate(g, "dev-1", "hub-a", {}, unavailable={"hub-a"})
    assert caught.value.code == "hub_unavailable"


# -- a hub that admits only provisioned devices (the hub's engine, EnginePolicy.provisioned_only) -------------
def test_a_hub_admitting_only_provisioned_devices_refuses_the_others():
    root = CA("Company-X")
    factory = CA("Factory-Y", parent=root, path_length=0)
    registry = MemoryRegistry()
    hub = engine(policy=EnginePolicy(provisioned_only=True), registry=registry)
    trust(hub, root)
    key, cert = factory.issue("dev-1")
    upload = [der(cert), der(factory.cert)]
    for refuse in (lambda: hub.begin(upload), lambda: hub.admit_proven(upload, "dev-1")):
        with pytest.raises(AuthError) as caught:
            refuse()
        assert caught.value.code == "device_not_provisioned"
    registry.provision("dev-1", hashlib.sha256(b"another certificate").digest())
    with pytest.raises(AuthError) as caught:
        hub.begin(upload)
    assert caught.value.code == "device_not_provisioned"
    registry.provision("dev-1", hashlib.sha256(der(cert)).digest())
    assert authenticate(hub, key, upload).device_id == "dev-1"
    registry.provision("dev-1", None)  # recorded without a certificate: any valid chain for the id
    assert hub.admit_proven(upload, "dev-1").device_id == "dev-1"


@pytest.mark.parametrize(
    "topic",
    ["$dps/registrations/res/", "$dps/registrations/res/abc/?$rid=1", "$dps/other/res/200/", "devices/x/messages"],
)
def test_the_device_refuses_a_topic_that_is_no_dps_response(topic):
    with pytest.raises(MqttsFailure) as caught:
        parse_response(topic, b"{}")
    assert caught.value.code == "dps_bad_response"


def test_the_device_reads_what_dps_answers_on_its_response_topic():
    topic = response_topic(202, "r/7", retry_after=3)  # a request id that needs quoting
    assert parse_response(topic, b'{"operationId": "op"}') == (202, "r/7", 3.0, {"operationId": "op"})
    assert parse_topic(POLL + "&x=%26") == (POLL_TOPIC, {"$rid": "{rid}", "operationId": "{operation}", "x": "&"})
