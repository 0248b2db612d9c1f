"""The parser adapter: mvdan/sh's syntax tree through shfmt, failing closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fioca import facts
from fioca.pki import reference
from fioca.pki.audit import Severity, audit_scripts, parser
from fioca.pki.audit.parser import Call, If, Param, ParseFailure, Script, Subst, Text

KNOWN = reference.known_sets(factory="acme", local_ca_cn="fio-abc")
CORPUS = sorted((Path(__file__).parent / "hostile_scripts").iterdir())


def test_shfmt_comes_with_the_package() -> None:
    path = parser.shfmt_path()
    assert path is not None and Path(path).name == "shfmt"


def test_every_known_and_hostile_script_parses_but_the_broken_one() -> None:
    texts = {f"{s}/{n}": t for s, scripts in KNOWN.items() for n, t in scripts.items()}
    texts |= {p.name: p.read_text() for p in CORPUS}
    results = parser.parse_many(texts)
    refused = {name for name, tree in results.items() if isinstance(tree, ParseFailure)}
    assert refused == {"sign_ca_csr__unterminated_heredoc"}
    assert results["sign_ca_csr__unterminated_heredoc"] == ParseFailure(17, "unclosed here-document `EOF` (column 14)")


def test_the_tree_has_quoting_expansions_and_branches() -> None:
    tree = parser.parse('if [ -n "$HSM_MODULE" ]; then x=$(dirname $0); fi\necho a\\*b "c"\n')
    assert isinstance(tree, Script)
    branch = tree.stmts[0].cmd
    assert isinstance(branch, If) and branch.orelse is None
    test = branch.cond[0].cmd
    assert isinstance(test, Call) and [w.source for w in test.args] == ["[", "-n", '"$HSM_MODULE"', "]"]
    assert test.args[2].parts == [Param("HSM_MODULE", None, None, False, True, "$HSM_MODULE")]
    assign = branch.then[0].cmd.assigns[0]
    assert assign.name == "x" and isinstance(assign.value.parts[0], Subst)
    echo = tree.stmts[1]
    assert echo.line == 2 and echo.cmd.args[1].parts == [Text("a", False), Text("*", True), Text("b", False)]


def test_here_documents_keep_their_quoting_and_lose_their_tabs() -> None:
    tree = parser.parse("cat <<-EOF\n\tq $x\n\tEOF\ncat <<'E'\n$y\nE\n")
    expanding = tree.stmts[0].redirects[0].heredoc
    assert [type(p).__name__ for p in expanding.parts] == ["Text", "Param", "Text"]
    assert expanding.parts[0].value == "q " and expanding.parts[2].value == "\n"
    quoted = tree.stmts[1].redirects[0].heredoc
    assert quoted.parts == [Text("$y\n", True)]


@pytest.mark.parametrize(
    "broken",
    ['echo "never closed\n', "echo 'never closed\n", "x=$(date\n", "cat <<EOF\nno end\n", "echo `date\n",
     "if [ -f a ]; then\n  echo a\n", "echo ${x/a/b}\n", "function f { :; }\n", "cat <<<x\n"],
)
def test_what_the_parser_refuses_is_high(broken: str) -> None:
    report = audit_scripts({"sign_tls_csr": "#!/bin/sh -e\n" + broken}, hsm=False, known=KNOWN, jail="")
    [finding] = [f for f in report.scripts[0].findings if f.id == "unparsable"]
    assert finding.severity == Severity.HIGH and "the shell parser refused the script" in finding.message
    assert finding.line >= 2


def test_a_node_the_adapter_does_not_know_fails_closed() -> None:
    tree = {"Type": "File", "Stmts": [{"Pos": {"Line": 3}, "Cmd": {"Type": "ArithmCmd", "Pos": {"Line": 3}}}]}
    failure = parser._convert_file(json.dumps(tree).encode(), b"")
    assert failure == ParseFailure(3, "the parser gave a ArithmCmd command, which the audit does not know")
    field = {"Type": "File", "Stmts": [{"Pos": {"Line": 1}, "Coprocess": True, "Cmd": {"Type": "CallExpr"}}]}
    assert isinstance(parser._convert_file(json.dumps(field).encode(), b""), ParseFailure)
    assert isinstance(parser._convert_file(b"[1, 2]", b""), ParseFailure)
    assert isinstance(parser._convert_file(b"not json", b""), ParseFailure)


def test_without_shfmt_nothing_passes(monkeypatch) -> None:
    monkeypatch.setattr(parser, "shfmt_path", lambda: None)
    report = audit_scripts(KNOWN[reference.FIOCA], hsm=False, known=KNOWN, jail="")
    for script in report.scripts:
        assert [(f.id, f.severity) for f in script.findings] == [("unparsable", Severity.HIGH)]
        assert "shfmt is not installed" in script.findings[0].message
    assert len(report.failing(Severity.HIGH)) == len(facts.SCRIPT_NAMES)


def test_a_shfmt_that_cannot_run_fails_closed(monkeypatch, tmp_path) -> None:
    fake = tmp_path / "shfmt"
    fake.write_text("#!/bin/sh\necho 'boom' >&2\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setattr(parser, "shfmt_path", lambda: str(fake))
    assert parser.parse("echo hi\n") == ParseFailure(1, "boom")
