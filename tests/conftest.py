"""Shared fixtures' building blocks."""

from __future__ import annotations

from hubsim.service.launcher import HubProcess


def serve_hub(tmp_path_factory, name: str = "hub", *, workers: int = 2, args=(), clean_log: bool = True):
    """Run a real hub for a module's tests; it must stop cleanly, and (unless told otherwise) its log must
    hold no ERROR line. Closed early (the generator's close(), e.g. by contextlib.closing after a failure),
    it still stops the hub, without judging it."""
    process = HubProcess(tmp_path_factory.mktemp(name) / "hub.db", workers=workers, args=tuple(args)).start()
    try:
        yield process
    except GeneratorExit:
        try:
            process.stop()
        finally:
            process.kill()
        raise
    try:
        assert process.stop() == 0, process.log()
    finally:
        process.kill()
    if clean_log:
        assert " ERROR " not in process.log(), process.log()
