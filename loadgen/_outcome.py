"""What happened to one authentication attempt, whatever the transport."""

from __future__ import annotations

__all__ = ["Outcome"]


class Outcome:
    """What happened to one authentication attempt."""

    __slots__ = ("code", "first", "ok", "retriable", "retry_after", "status", "step")

    def __init__(
        self,
        ok: bool,
        code: str = "",
        step: str = "",
        status: int = 0,
        retriable: bool = False,
        retry_after: float | None = None,
        first: bool = False,
    ):
        self.ok, self.code, self.step, self.status = ok, code, step, status
        self.retriable, self.retry_after, self.first = retriable, retry_after, first
