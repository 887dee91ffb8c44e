"""``backhaul check`` on TLS configs: each broken file is reported with its config path and
what to do, all problems at once; ``backhaul ca`` and quick mode's TLS flags refuse bad input
in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from backhaul.config import load_text, quick_config
from backhaul.errors import ConfigError
from tests.tls.material import Material, bad_wildcard_leaf, write_leaf

BACKHAUL = [sys.executable, "-m", "backhaul"]


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BACKHAUL, "check", str(path)], capture_output=True, text=True, timeout=60
    )


def write(tmp: Path, name: str, config: dict[str, object]) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(config))
    return path


def edge(listeners: list[dict[str, object]], clusters: dict[str, object] | None = None) -> dict:
    return {
        "listeners": listeners,
        "routes": [{"respond": {"body": "x"}}],
        "clusters": clusters or {},
    }


def test_a_good_tls_config_is_valid(material: Material, tmp_path: Path) -> None:
    tls = {"cert": str(material.localhost.cert), "key": str(material.localhost.key)}
    result = check(write(tmp_path, "ok.yaml", edge([{"address": "127.0.0.1:8443", "tls": tls}])))
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


def test_every_broken_file_is_named_with_its_config_path(
    material: Material, tmp_path: Path
) -> None:
    expired = material.leaf("expired", ["old.test"], now=material.now - timedelta(days=30), days=2)
    bad = write_leaf(tmp_path, "bad-wildcard", bad_wildcard_leaf(material.ca, material.now))
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        serialization.load_pem_private_key(material.a.key.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    wrong_pass = tmp_path / "wrong.pass"
    wrong_pass.write_text("nope\n")
    config = edge(
        [
            {
                "address": "127.0.0.1:8443",
                "tls": {
                    "certificates": [
                        {"cert": str(tmp_path / "missing.pem"), "key": str(material.a.key)},
                        {"cert": str(material.a.cert), "key": str(material.wild.key)},
                        {"cert": str(expired.cert), "key": str(expired.key)},
                        {"cert": str(bad.cert), "key": str(bad.key)},
                        {"cert": str(material.a.cert), "key": str(encrypted)},
                        {
                            "cert": str(material.a.cert),
                            "key": str(encrypted),
                            "passphrase_file": str(wrong_pass),
                        },
                    ]
                },
            },
            {"address": "127.0.0.1:8444", "tls": {"internal": True, "names": ["a.*.test"]}},
            {"address": "127.0.0.1:8445", "tls": {}},
        ],
        {
            "app": {
                "endpoints": ["127.0.0.1:9000"],
                "tls": {"ca": str(tmp_path / "nope.pem"), "cert": str(material.a.cert)},
            }
        },
    )
    result = check(write(tmp_path, "bad.yaml", config))
    assert result.returncode == 2
    err = result.stderr
    want = [
        "listeners[0].tls.certificates[0].cert: found no file",
        "listeners[0].tls.certificates[1].key: ",
        "the key does not match the certificate",
        "listeners[0].tls.certificates[2].cert: ",
        "expired",
        "listeners[0].tls.certificates[3].cert: ",
        "'api.*.test', a wildcard in the wrong place",
        "listeners[0].tls.certificates[4].key: ",
        "encrypted private key and no passphrase: add passphrase_file",
        "listeners[0].tls.certificates[5].key: ",
        "cannot decrypt",
        "listeners[1].tls.names[0]: found the wildcard in the wrong place",
        "listeners[2].tls: found tls without a certificate: add tls.cert and tls.key, or set"
        " tls.internal: true",
        "clusters.app.tls.ca: found no file",
        "clusters.app.tls.cert: found only one of cert and key",
    ]
    for text in want:
        assert text in " ".join(err.split()), (text, err)
    assert "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_key_says_to_check_permissions(material: Material, tmp_path: Path) -> None:
    key = tmp_path / "locked.key"
    key.write_bytes(material.a.key.read_bytes())
    key.chmod(0)
    config = edge(
        [{"address": "127.0.0.1:8443", "tls": {"cert": str(material.a.cert), "key": str(key)}}]
    )
    result = check(write(tmp_path, "perm.yaml", config))
    assert result.returncode == 2
    assert "listeners[0].tls.certificates[0].key: cannot read" in result.stderr


def test_redirect_https_is_for_plain_listeners(material: Material) -> None:
    text = f"""
listeners:
  - address: 127.0.0.1:8443
    tls: {{cert: {material.a.cert}, key: {material.a.key}}}
    redirect_https: {{port: 8443}}
routes: [{{respond: {{body: x}}}}]
"""
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    assert caught.value.problems[0][0] == "listeners[0].redirect_https"


def test_quick_mode_builds_tls_listeners_and_https_upstreams(material: Material) -> None:
    config = quick_config(
        "https://api.internal",
        ":8443",
        {"cert": str(material.a.cert), "key": str(material.a.key)},
    )
    listener = config.listeners[0]
    assert listener.tls is not None and listener.tls.certificates[0].cert == str(material.a.cert)
    cluster = config.clusters["upstream"]
    assert cluster.tls is not None and str(cluster.endpoints[0].address) == "api.internal:443"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "127.0.0.1:1", "--tls-cert", "c.pem"], "go together"),
        (["--tls-internal"], "go with --to"),
        (["--to", "127.0.0.1:1", "--tls-internal", "--tls-key", "k"], "either --tls-internal"),
    ],
)
def test_quick_mode_tls_flags_refuse_bad_combinations(args: list[str], message: str) -> None:
    result = subprocess.run([*BACKHAUL, "serve", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_ca_commands_on_a_fresh_state_dir(tmp_path: Path) -> None:
    env = dict(os.environ, BACKHAUL_STATE_DIR=str(tmp_path / "state"))

    def ca(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BACKHAUL, "ca", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )

    missing = ca("root")
    assert missing.returncode == 1 and "backhaul ca init" in missing.stderr
    made = ca("init")
    assert made.returncode == 0 and "mode 0600" in made.stdout
    again = ca("init")
    assert again.returncode == 1 and "already exists" in again.stderr
    issued = ca("issue", "svc.test", "*.svc.test", "--ip", "10.1.2.3", "--days", "2")
    assert issued.returncode == 0, issued.stderr
    assert (tmp_path / "svc.test.pem").exists() and (tmp_path / "svc.test.key").exists()
    root = ca("root")
    assert root.stdout.startswith("-----BEGIN CERTIFICATE-----")
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", "/dev/stdin", str(tmp_path / "svc.test.pem")],
        input=root.stdout,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert verify.returncode == 0 and ": OK" in verify.stdout
    bad = ca("issue", "a.*.test")
    assert bad.returncode == 2 and "wildcard in the wrong place" in bad.stderr


def test_client_cert_route_conditions_are_checked(material: Material) -> None:
    from backhaul.config.model import advisories

    base = """
listeners:
  - name: plain
    address: 127.0.0.1:8080
routes:
  - match: {client_cert: %s}
    respond: {body: x}
"""
    with pytest.raises(ConfigError) as caught:
        load_text(base % "{}")
    assert "expected at least one" in caught.value.problems[0][1]
    with pytest.raises(ConfigError):
        load_text(base % "{subject: '(unclosed'}")
    config = load_text(base % "{present: true}")
    notes = dict(advisories(config))
    assert "asks for client certificates" in notes["routes[0].match.client_cert"]
