from typing import Any

class Recorder:
    def __init__(
        self,
        requests: Any,
        dbuckets: Any,
        ubuckets: Any,
        bytes_in: Any,
        bytes_out: Any,
        dsum: Any,
        usum: Any,
        bounds: Any,
        key_cluster: Any,
    ) -> None: ...
    def record(
        self,
        key: int,
        status: int,
        duration: float,
        upstream_time: float | None,
        bytes_in: int,
        bytes_out: int,
    ) -> None: ...
