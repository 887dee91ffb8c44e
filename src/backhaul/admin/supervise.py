"""``python -m backhaul.admin.supervise``: the edge's supervisor, run with its control
process (the admin API and the active health checks).

The supervisor (:mod:`backhaul.edge.supervisor`) binds the admin address and forks the
control process, but knows nothing of the admin package: this module, the layer that builds
both, hands it the :data:`~backhaul.admin.process.LAUNCHER`. ``backhaul serve`` execs this
module; it loads no more than the supervisor does (the control process loads the API when it
starts).
"""

from __future__ import annotations

import sys

from backhaul.admin.process import LAUNCHER
from backhaul.edge.supervisor import main

if __name__ == "__main__":
    sys.exit(main(launcher=LAUNCHER))
