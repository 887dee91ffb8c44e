"""Suite-wide settings: hypothesis never fails a test for being slow on a busy machine (the
suite asserts on behaviour, never on timings), and examples stay bounded.

The edge's data plane and the modules compiled with it are extension modules built from
sources in the tree: a source edited since the last build would be tested as its old
compiled self, so the run stops and says how to rebuild."""

from pathlib import Path

import pytest
from hypothesis import settings

import backhaul

settings.register_profile("backhaul", deadline=None, print_blob=True)
settings.load_profile("backhaul")


def _stale_extensions() -> list[str]:
    root = Path(backhaul.__file__).parent
    stale = []
    for built in root.rglob("*.so"):
        stem = built.name.split(".", 1)[0]
        sources = [built.with_name(stem + ext) for ext in (".pyx", ".pxd", ".py")]
        newest = max((s.stat().st_mtime for s in sources if s.exists()), default=0.0)
        if newest > built.stat().st_mtime:
            stale.append(str(built.relative_to(root.parent)))
    return stale


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = _stale_extensions()
    if stale:
        pytest.exit(
            "compiled modules are older than their sources: "
            + ", ".join(sorted(stale))
            + "; rebuild with `make test` (or `.venv/bin/pip install -e .`)",
            returncode=2,
        )
