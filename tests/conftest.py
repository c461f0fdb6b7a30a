"""Shared fixtures' building blocks."""

from __future__ import annotations

from hubsim.service.launcher import HubProcess


def serve_hub(tmp_path_factory, name: str = "hub", *, workers: int = 2, args=(), clean_log: bool = True):
    """Run a real hub for a module's tests; it must stop cleanly, and (unless told otherwise) its log must
    hold no ERROR line."""
    process = HubProcess(tmp_path_factory.mktemp(name) / "hub.db", workers=workers, args=tuple(args)).start()
    yield process
    try:
        assert process.stop() == 0, process.log()
    finally:
        process.kill()
    if clean_log:
        assert " ERROR " not in process.log(), process.log()
