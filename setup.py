"""Build of backhaul's compiled data plane (everything else is in pyproject.toml).

The request path (``backhaul.edge.datapath``) is Cython driving llhttp, the HTTP/1.1 parser
that httptools and Node.js use. llhttp's C sources are taken from the httptools source
distribution on the package index (pinned by version and checksum), unpacked under
``build/llhttp``; set ``BACKHAUL_LLHTTP_DIR`` to use another copy (a directory with
``include/llhttp.h`` and ``src/*.c``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
SOURCE_PACKAGE = "httptools==0.9.0"
SOURCE_SHA256 = "d484ebb7e3a3f3597b0f645fbd1b85633674ca808c1f5ba11c2caf7c66f5c8b6"


COMPILED_PYTHON = (
    "backhaul.http.head",
    "backhaul.http.target",
    "backhaul.http.headers",
    "backhaul.edge.accesslog",
    "backhaul.edge.routing",
    "backhaul.edge.cluster",
    "backhaul.balance.balancer",
    "backhaul.balance.circuit",
    "backhaul.balance.endpoint",
    "backhaul.balance.least",
    "backhaul.balance.rotation",
    "backhaul.balance.random_choice",
    "backhaul.balance.retry",
)


class BuildError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"backhaul build: {message}")


def _fetch_llhttp(dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        cmd += ["-d", tmp, SOURCE_PACKAGE]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        archives = list(Path(tmp).glob("httptools-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise BuildError(
                "could not download llhttp's C sources (in the httptools source package): "
                f"{result.stderr.strip()[-400:]}\n  Download {SOURCE_PACKAGE}'s sdist yourself "
                "and set BACKHAUL_LLHTTP_DIR to its vendor/llhttp directory."
            )
        data = archives[0].read_bytes()
        if hashlib.sha256(data).hexdigest() != SOURCE_SHA256:
            raise BuildError(f"{archives[0].name} does not have the pinned checksum")
        with tarfile.open(archives[0]) as tar:
            prefix = archives[0].name[: -len(".tar.gz")] + "/vendor/llhttp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
            staging = dest.with_name(dest.name + ".tmp")
            for member in members:
                member.name = member.name[len(prefix) :]
                tar.extract(member, staging, filter="data")
        staging.rename(dest)


def llhttp_dir() -> Path:
    configured = os.environ.get("BACKHAUL_LLHTTP_DIR")
    path = Path(configured) if configured else ROOT / "build" / "llhttp"
    if not (path / "include" / "llhttp.h").is_file():
        if configured:
            raise BuildError(f"BACKHAUL_LLHTTP_DIR={configured} has no include/llhttp.h")
        path.parent.mkdir(parents=True, exist_ok=True)
        _fetch_llhttp(path)
    return path


def extensions() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError as exc:
        raise BuildError("Cython 3 is needed to build the data plane: pip install cython") from exc
    llhttp = llhttp_dir()
    datapath = Extension(
        "backhaul.edge.datapath",
        sources=[
            "src/backhaul/edge/datapath.pyx",
            *(str(llhttp / "src" / name) for name in ("api.c", "http.c", "llhttp.c")),
        ],
        include_dirs=[str(llhttp / "include")],
        extra_compile_args=["-O2"],
    )
    recorder = Extension(
        "backhaul.state.recorder",
        sources=["src/backhaul/state/recorder.pyx"],
        extra_compile_args=["-O2"],
    )
    parking = Extension(
        "backhaul.edge.parking",
        sources=["src/backhaul/edge/parking.pyx"],
        extra_compile_args=["-O2"],
    )
    tlsstream = Extension(
        "backhaul.edge.tlsstream",
        sources=["src/backhaul/edge/tlsstream.pyx"],
        extra_compile_args=["-O2"],
    )
    # Modules of plain typed Python that the request path calls, compiled from the same
    # source (the .py stays the one implementation; the compiled module is preferred on import).
    compiled_python = [
        Extension(name, [f"src/{name.replace('.', '/')}.py"], extra_compile_args=["-O2"])
        for name in COMPILED_PYTHON
    ]
    return cythonize(
        [datapath, recorder, parking, tlsstream, *compiled_python],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )


setup(ext_modules=extensions())
