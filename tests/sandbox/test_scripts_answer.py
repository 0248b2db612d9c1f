"""Answers with or without the API's scripts, chosen per sandbox: the documented flow, typed
as the guide types it (curl, jq, sh), runs each revision's scripts end to end; without scripts
the answer is today's (CSRs only); both POST bodies are accepted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sandbox_helpers import FACTORY, Client

from fioca import facts
from fioca.pki import reference
from fioca.sandbox import Sandbox, SandboxError

MODERN_BODY = {"first-time-init": True, "ca-csr": True, "est-tls-csr": False, "tls-csr": True}

# PKI-SPEC section 3 as shell commands: POST | jq . > factory_certs.json, the scripts taken out
# with jq -r, run as files in the PKI dir, the results PATCHed back with curl.
DOCUMENTED_FLOW = r"""
set -e
curl -sf -X POST -H "Content-Type: application/json" -H "OSF-TOKEN: $TOKEN" --cacert "$CACERT" \
    "$API/ota/factories/$FACTORY/certs/" | jq . > factory_certs.json
for name in create_ca sign_tls_csr sign_ca_csr create_device_ca; do
    jq -r ".$name" factory_certs.json > $name
    chmod 700 $name
done
jq -r '.["tls-csr"]' factory_certs.json > tls-csr
jq -r '.["ca-csr"]' factory_certs.json > ca-csr
./create_ca
./sign_tls_csr tls-csr > tls-crt
./sign_ca_csr ca-csr > online-crt
./create_device_ca local-ca.key local-ca.pem
jq -n --rawfile root factory_ca.pem --rawfile tls tls-crt --rawfile online online-crt --rawfile local local-ca.pem \
    '{"root-crt": $root, "tls-crt": $tls, "ca-crt": ($online + "\n" + $local)}' \
  | curl -sf -X PATCH -H "Content-Type: application/json" -H "OSF-TOKEN: $TOKEN" --cacert "$CACERT" \
    --data-binary @- -o /dev/null -w '%{http_code}' "$API/ota/factories/$FACTORY/certs/"
"""


def _documented_flow(box: Sandbox, pki: Path) -> subprocess.CompletedProcess:
    pki.mkdir()
    info = box.info
    env = {"PATH": "/usr/bin:/bin", "TOKEN": info.token, "CACERT": str(info.cacert), "API": info.api_url,
           "FACTORY": FACTORY}
    return subprocess.run(["sh", "-c", DOCUMENTED_FLOW], cwd=pki, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("revision", reference.API_REVISIONS)
def test_the_documented_flow_runs_each_revisions_scripts(tmp_path: Path, revision: str) -> None:
    with Sandbox(tmp_path / "sandbox", factory=FACTORY, scripts=revision) as box:
        done = _documented_flow(box, tmp_path / "pki")
        assert done.returncode == 0 and done.stdout == "200", done.stderr
        certs = Client(box).get_certs().json()
        assert certs["root-crt"] == (tmp_path / "pki" / "factory_ca.pem").read_text()
        local_ca_cn = f"fio-{box.store.factory().polis_id}"
        expected = reference.api_scripts(revision, factory=FACTORY, local_ca_cn=local_ca_cn)
        for name in facts.SCRIPT_NAMES:
            assert (tmp_path / "pki" / name).read_text() == expected[name] + "\n"  # jq -r adds a newline


def test_without_scripts_the_documented_flow_has_nothing_to_run(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sandbox", factory=FACTORY, scripts=None) as box:
        answer = Client(box).post_certs({})
        assert answer.status_code == 201
        assert set(answer.json()) == {"tls-csr", "ca-csr"}  # today's answer: the CSRs only
        done = _documented_flow(box, tmp_path / "pki")
        assert done.returncode != 0  # `jq -r .create_ca` gives "null": there is no script to run


@pytest.mark.parametrize("scripts", [*reference.API_REVISIONS, None])
def test_both_post_bodies_are_accepted_by_every_kind_of_answer(tmp_path: Path, scripts: str | None) -> None:
    with Sandbox(tmp_path / "sandbox", factory=FACTORY, scripts=scripts) as box:
        client = Client(box)
        script_era, modern = client.post_certs({}), client.post_certs(MODERN_BODY)
        assert script_era.status_code == modern.status_code == 201
        for answer in (script_era.json(), modern.json()):
            assert {"tls-csr", "ca-csr"} <= set(answer) and "est-tls-csr" not in answer
            assert (set(facts.SCRIPT_NAMES) <= set(answer)) is (scripts is not None)
        without_online = client.post_certs({**MODERN_BODY, "ca-csr": False}).json()
        assert "ca-csr" not in without_online


def test_an_unknown_script_set_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="unknown script set 'api-1999'"):
        Sandbox(tmp_path / "sandbox", scripts="api-1999")
    assert not (tmp_path / "sandbox").exists()
