"""A fake event loop and transport for driving a `Connection` packet by packet in unit
tests (what it writes is kept in `Transport.data`)."""

from __future__ import annotations

from typing import Any


class Loop:
    def call_soon(self, callback: Any, *args: Any) -> None:
        pass

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        return None


class Transport:
    def __init__(self) -> None:
        self.data = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def writelines(self, data: list[bytes]) -> None:
        self.data += b"".join(data)

    def write(self, data: bytes) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
