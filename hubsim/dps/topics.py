"""DPS's MQTT topics, for both sides: the filter a device subscribes to, the request topics it publishes
on, the response topic DPS answers on, and their query parameters (``$rid``, ``operationId``,
``retry-after``). Light on purpose: the device side imports it without the service."""

from __future__ import annotations

from urllib.parse import quote, unquote

RESPONSE_FILTER = "$dps/registrations/res/#"
RESPONSE_PREFIX = "$dps/registrations/res/"
REGISTER_TOPIC = "$dps/registrations/PUT/iotdps-register/"
POLL_TOPIC = "$dps/registrations/GET/iotdps-get-operationstatus/"


def parse_topic(topic: str) -> tuple[str, dict[str, str]]:
    """(path, query parameters) of a DPS topic."""
    path, _, query = topic.partition("?")
    params = {}
    for item in query.split("&") if query else ():
        key, _, value = item.partition("=")
        params[unquote(key)] = unquote(value)
    return path, params


def response_topic(status: int, rid: str, retry_after: int | None = None) -> str:
    topic = f"{RESPONSE_PREFIX}{status}/?$rid={quote(rid, safe='')}"
    return topic + (f"&retry-after={retry_after}" if retry_after is not None else "")


__all__ = ["POLL_TOPIC", "REGISTER_TOPIC", "RESPONSE_FILTER", "RESPONSE_PREFIX", "parse_topic", "response_topic"]
