"""`keys ca extract` prints what `jq -r` prints, for a field name or any jq filter; checked
against the jq program itself."""

from __future__ import annotations

import json
import subprocess

import pytest

ANSWER = {
    "create_ca": "#!/bin/sh -e\nopenssl version\n",
    "tls-csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    "ca-csr": None,
    "nested": {"list": [1, 2.5, "é", True, None, {}], "del": "\u007f"},
}


@pytest.fixture
def answer(tmp_path):
    path = tmp_path / "factory_certs.json"
    path.write_text(json.dumps(ANSWER, indent=2, ensure_ascii=False))
    return path


@pytest.mark.parametrize(
    "argument, jq_filter",
    [
        ("create_ca", ".create_ca"),
        ("tls-csr", '.["tls-csr"]'),
        ("ca-csr", '.["ca-csr"]'),
        ("no-such-field", '.["no-such-field"]'),
        ('.["tls-csr"]', '.["tls-csr"]'),
        ("keys", "keys"),
        (".nested", ".nested"),
        (".nested.list[]", ".nested.list[]"),
        ("to_entries | map(.key) | join(\",\")", "to_entries | map(.key) | join(\",\")"),
        ("length", "length"),
    ],
)
def test_extract_is_jq_r(cli, answer, argument, jq_filter):
    expected = subprocess.run(["jq", "-r", jq_filter, str(answer)], capture_output=True, text=True, check=True).stdout
    result = cli("keys", "ca", "extract", argument, "--file", answer)
    assert result.exit_code == 0, result.output
    assert result.stdout == expected


def test_a_filter_that_does_not_compile_is_a_usage_error(cli, answer):
    result = cli("keys", "ca", "extract", ".[", "--file", answer)
    assert result.exit_code == 2 and "does not compile" in result.stderr and result.stdout == ""


def test_a_filter_that_fails_on_the_answer_says_so(cli, answer):
    result = cli("keys", "ca", "extract", ".create_ca.x", "--file", answer)
    assert result.exit_code == 1 and "Cannot index string" in result.stderr and result.stdout == ""


def test_a_script_written_to_a_file_is_byte_for_byte(cli, answer, tmp_path):
    hostile = dict(ANSWER, create_ca="#!/bin/sh\nprintf '\x1b[2J'\n")
    answer.write_text(json.dumps(hostile))
    result = cli("keys", "ca", "extract", "create_ca", "--file", answer)
    assert result.stdout == hostile["create_ca"] + "\n"  # not a terminal: the bytes as jq gives them
