"""``python -m backhaul.services.dhcp --config-fd FD [--metrics-file PATH]``: the DHCP
service as its own process.

``backhaul serve`` validates the config, then (next to the edge's supervisor) starts this
with the ``dhcp:`` section as JSON in a memory file; it is validated again here, so the
process runs exactly the typed config ``backhaul check`` accepts. ``--metrics-file``: where to
publish its metrics each second for the edge's admin listener
(:mod:`backhaul.state.extra_metrics`).
"""

from __future__ import annotations

import json
import os
import sys

from backhaul.config.dhcp import DhcpConfig
from backhaul.errors import BackhaulError
from backhaul.services.dhcp.service import run


def main(argv: list[str]) -> int:
    opts = dict(zip(argv[::2], argv[1::2], strict=False))
    fd = int(opts["--config-fd"])
    with os.fdopen(fd, "rb") as handle:
        config = DhcpConfig.model_validate(json.loads(handle.read()))
    try:
        return run(config, metrics_file=opts.get("--metrics-file"))
    except BackhaulError as exc:
        print(f"backhaul: error: dhcp: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
