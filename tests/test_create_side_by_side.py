"""create's steps after create_ca run side by side (issue 14), and nothing a user sees or the
journal records tells it from one step after the other: progress and script lines in the
plan's order, the first failure in that order reported, what a failed or stopped step made
never kept, no work dir and no process left, and Ctrl-C saying what state it left.

Timing is never asserted: the scripts that must overlap sleep (a signing script then lasts
at least that long), and a step that must be stopped sleeps far longer than the test runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fioca import facts
from fioca.pki import scripts as runner_module
from fioca.pki.journal import Journal
from fioca.pki.files import PkiDir
from fioca.pki.plan import PROGRESS, plan_create
from tests.conftest import answer_with
from tests.test_hostile_server import _processes_with, api_scripts

SIGNING = (facts.SIGN_TLS_CSR, facts.SIGN_CA_CSR, facts.CREATE_DEVICE_CA)
LONG = 300  # seconds: far longer than any test here runs


def changed(sandbox, **inserted: str) -> dict[str, str]:
    """The server's own scripts, each named one running `text` first (after its `#!` line)."""
    scripts = api_scripts(sandbox)
    return {script: scripts[script].replace("\n", f"\n{text}\n", 1) for script, text in inserted.items()}


@pytest.fixture
def runs(monkeypatch):
    """Each script run: its name, when it started and ended (monotonic), how it ended."""
    seen: list[dict] = []
    lock = threading.Lock()
    real = runner_module.ScriptRunner.run

    def spy(self, name, args=()):
        entry = {"script": name, "start": time.monotonic(), "error": None}
        try:
            return real(self, name, args)
        except Exception as exc:
            entry["error"] = str(exc)
            raise
        finally:
            entry["end"] = time.monotonic()
            with lock:
                seen.append(entry)

    monkeypatch.setattr(runner_module.ScriptRunner, "run", spy)
    return seen


def by_script(runs: list[dict]) -> dict[str, dict]:
    return {entry["script"]: entry for entry in runs}


def leftovers(pki: Path) -> list[str]:
    return sorted(name for name in os.listdir(pki) if name.startswith(facts.WORK_DIR))


@pytest.fixture
def marker(request) -> str:
    """In every process a test's scripts start, so a survivor is found: the test's own, not
    MARKER, which other tests run beside this one (-n 2) leave in their processes for a while
    (and which are not this test's to find)."""
    return f"fioca-marker-{request.node.name}-end"


def test_the_signing_steps_run_side_by_side_and_report_in_order(cli, sandbox, sandbox_env, monkeypatch, runs, tmp_path):
    answer_with(monkeypatch, sandbox, changed(sandbox, **{script: "sleep 1" for script in SIGNING}))
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", "--allow-unaudited", env=sandbox_env)
    assert result.exit_code == 0, result.output

    seen = by_script(runs)
    assert set(seen) == set(facts.SCRIPT_NAMES)
    root_done = seen[facts.CREATE_CA]["end"]
    assert all(seen[script]["start"] >= root_done for script in SIGNING)  # each needs the root, kept
    # Each signing script sleeps a second; all three were running at one moment.
    assert max(seen[script]["start"] for script in SIGNING) < min(seen[script]["end"] for script in SIGNING)

    # What the user sees is in the plan's order: a step's progress line, then its script's lines.
    lines = result.stderr.splitlines()
    order = [lines.index(PROGRESS[script]) for script in facts.SCRIPT_NAMES]
    assert order == sorted(order)
    for index, script in enumerate(facts.SCRIPT_NAMES):
        end = order[index + 1] if index + 1 < len(order) else len(lines)
        own = [n for n, line in enumerate(lines) if line.lstrip().startswith(f"[{script}]")]
        assert all(order[index] < n < end for n in own), (script, result.stderr)
        assert own or script == facts.CREATE_CA, (script, result.stderr)  # each signing script says what it signed
    assert leftovers(pki) == []
    assert not (pki / facts.JOURNAL_FILE).exists()


def test_a_failing_step_stops_the_steps_beside_it(cli, sandbox, sandbox_env, monkeypatch, runs, recorder, tmp_path, marker):
    inserted = {
        facts.SIGN_TLS_CSR: "sleep 1; echo 'no signature today' >&2; exit 4",
        facts.SIGN_CA_CSR: f"sh -c 'sleep {LONG}; : {marker}'",
        facts.CREATE_DEVICE_CA: f"sh -c 'sleep {LONG}; : {marker}'",
    }
    answer_with(monkeypatch, sandbox, changed(sandbox, **inserted))
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", "--allow-unaudited", env=sandbox_env)

    assert result.exit_code == 5, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "script sign_tls_csr exited with status 4" in errors[0], result.stderr
    seen = by_script(runs)
    for script in (facts.SIGN_CA_CSR, facts.CREATE_DEVICE_CA):  # stopped, not waited for
        assert "stopped by fioca" in seen[script]["error"], seen[script]
    # Only the root was kept; the stopped steps' progress lines never showed.
    journal = Journal.load(PkiDir.open(pki))
    assert list(journal.steps) == [facts.CREATE_CA] and journal.running == []
    for name in (facts.TLS_CERT, facts.ONLINE_CA_CERT, facts.LOCAL_CA_CERT, facts.LOCAL_CA_KEY):
        assert not (pki / name).exists()
    assert PROGRESS[facts.SIGN_CA_CSR] not in result.stderr
    assert leftovers(pki) == [] and _processes_with(marker) == []
    assert [method for method, _ in recorder] == ["POST"]


def test_a_later_step_that_fails_first_waits_for_the_earlier_ones(cli, sandbox, sandbox_env, monkeypatch, runs, tmp_path):
    """create_device_ca fails while sign_tls_csr still runs: the earlier steps are kept and
    journalled first, then the failure is reported, as one step after the other would."""
    inserted = {facts.SIGN_TLS_CSR: "sleep 1", facts.CREATE_DEVICE_CA: "echo 'no device CA' >&2; exit 6"}
    answer_with(monkeypatch, sandbox, changed(sandbox, **inserted))
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", "--allow-unaudited", env=sandbox_env)

    assert result.exit_code == 5, result.output
    assert "script create_device_ca exited with status 6" in result.stderr
    seen = by_script(runs)
    assert seen[facts.CREATE_DEVICE_CA]["end"] < seen[facts.SIGN_TLS_CSR]["end"]  # it did fail first
    journal = Journal.load(PkiDir.open(pki))
    assert list(journal.steps) == [facts.CREATE_CA, facts.SIGN_TLS_CSR, facts.SIGN_CA_CSR]
    assert (pki / facts.TLS_CERT).exists() and (pki / facts.ONLINE_CA_CERT).exists()
    assert not (pki / facts.LOCAL_CA_CERT).exists() and leftovers(pki) == []
    lines = result.stderr.splitlines()
    assert lines.index(PROGRESS[facts.SIGN_CA_CSR]) < lines.index(PROGRESS[facts.CREATE_DEVICE_CA]) < len(lines) - 1
    assert lines[-1].startswith("ERROR: script create_device_ca")


def test_without_the_jail_the_steps_run_one_at_a_time(cli, sandbox_env, runs, tmp_path):
    result = cli("keys", "ca", "create", tmp_path / "pki", "--yes", "--no-jail", env=sandbox_env)
    assert result.exit_code == 0, result.output
    ordered = [by_script(runs)[script] for script in facts.SCRIPT_NAMES]
    assert all(before["end"] <= after["start"] for before, after in zip(ordered, ordered[1:]))


def test_the_plan_says_what_each_step_waits_for():
    plan = plan_create()
    jailed = {step.script: plan.waits_for(step, side_by_side=plan.side_by_side(jailed=True)) for step in plan.steps}
    assert jailed == {facts.CREATE_CA: (), **{script: (facts.CREATE_CA,) for script in SIGNING}}
    alone = {step.script: plan.waits_for(step, side_by_side=plan.side_by_side(jailed=False)) for step in plan.steps}
    assert alone == dict(zip(facts.SCRIPT_NAMES, [(), *((before,) for before in facts.SCRIPT_NAMES[:-1])]))
    assert not plan_create(hsm=True).side_by_side(jailed=True)


def test_the_dry_run_shows_each_work_dir_and_the_order(cli, sandbox_env, tmp_path):
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--dry-run", "--format", "json", env=sandbox_env)
    plan = json.loads(result.stdout)["plan"]
    assert plan["side_by_side"] is True
    run_steps = [step for step in plan["steps"] if step["kind"] == "run"]
    assert [step["cwd"] for step in run_steps] == [str(pki / facts.work_dir_of(s)) for s in facts.SCRIPT_NAMES]
    assert [step["waits_for"] for step in run_steps] == [[], *([facts.CREATE_CA] for _ in SIGNING)]
    text = cli("keys", "ca", "create", pki, "--dry-run", env=sandbox_env).stdout
    assert "starts once kept: create_ca" in text and "each in its own jail" in text
    alone = json.loads(cli("keys", "ca", "create", pki, "--dry-run", "--no-jail", "--format", "json",
                           env=sandbox_env).stdout)["plan"]  # fmt: skip
    assert alone["side_by_side"] is False


def test_ctrl_c_while_the_steps_run_side_by_side(sandbox, sandbox_env, monkeypatch, home, tmp_path, marker):
    """SIGINT to a real fioca process while all three signing scripts run: each jail is gone,
    each work dir removed, the line and the journal say what is kept."""
    answer_with(monkeypatch, sandbox, changed(sandbox, **{script: f"sh -c 'sleep {LONG}; : {marker}'" for script in SIGNING}))
    pki = tmp_path / "pki"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIOCTL_", "FIOCA_"))}
    env.update(sandbox_env, HOME=str(home))
    process = subprocess.Popen(
        [sys.executable, "-m", "fioca", "keys", "ca", "create", str(pki), "--yes", "--allow-unaudited"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(_processes_with(marker)) < len(SIGNING) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_processes_with(marker)) >= len(SIGNING), "the three signing scripts never ran together"
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert f"Interrupted (finished: {facts.CREATE_CA}); the root key is kept in {pki / facts.ROOT_KEY}" in err, err
    assert "stopped inside" not in err  # every work dir is gone: nothing to warn about
    assert _processes_with(marker) == [] and leftovers(pki) == []
    journal = Journal.load(PkiDir.open(pki))  # what --resume takes up (it runs the saved scripts)
    assert (list(journal.steps), journal.running) == ([facts.CREATE_CA], [])


def test_the_journal_names_every_work_dir_that_may_hold_the_root_key(tmp_path):
    folder = tmp_path / "pki"
    folder.mkdir(mode=0o700)
    with PkiDir.open(folder) as pki:
        journal = Journal.begin(pki, factory="f", online_ca=True, local_ca=True, hsm=False, local_ca_cn="fio-1",
                                answer_sha256="0" * 64)  # fmt: skip
        journal.note_running([facts.SIGN_TLS_CSR, facts.SIGN_CA_CSR])
        for script in (facts.SIGN_TLS_CSR, facts.SIGN_CA_CSR):
            pki.make_folder(facts.work_dir_of(script))
        text = Journal.load(pki).progress()
        assert f"stopped inside {facts.SIGN_TLS_CSR} and {facts.SIGN_CA_CSR}, whose work dirs" in text
        for script in (facts.SIGN_TLS_CSR, facts.SIGN_CA_CSR):
            assert str(folder / facts.work_dir_of(script)) in text
        # Only the work dirs still there are named: one removed is no place for a key.
        pki.remove_folder(facts.work_dir_of(facts.SIGN_CA_CSR))
        text = Journal.load(pki).progress()
        assert str(folder / facts.work_dir_of(facts.SIGN_CA_CSR)) not in text and "whose work dir " in text
        pki.remove_folder(facts.work_dir_of(facts.SIGN_TLS_CSR))
        assert "may hold" not in Journal.load(pki).progress()
        # A journal written one script at a time (a string, or null) still loads, and the one
        # work dir such a run left (.fioca-work) is the one named.
        data = json.loads((folder / facts.JOURNAL_FILE).read_text())
        for before, after in (("create_ca", ["create_ca"]), (None, [])):
            pki.replace(facts.JOURNAL_FILE, json.dumps({**data, "running": before}).encode())
            assert Journal.load(pki).running == after
        pki.replace(facts.JOURNAL_FILE, json.dumps({**data, "running": "create_ca"}).encode())
        pki.make_folder(facts.WORK_DIR)
        assert f"stopped inside create_ca, whose work dir {folder / facts.WORK_DIR} may hold" in Journal.load(pki).progress()


def _fioca_threads() -> list[threading.Thread]:
    """The threads of create's steps still alive (StepRun names each after its script)."""
    names = {f"fioca-{script}" for script in facts.SCRIPT_NAMES}
    return [thread for thread in threading.enumerate() if thread.name in names and thread.is_alive()]


def test_ctrl_c_just_as_a_step_starts_leaves_no_step_running(cli, sandbox, sandbox_env, monkeypatch, tmp_path, marker):
    """A Ctrl-C can land while the flow starts a step's thread (Thread.start() waits for it):
    that step is stopped and waited for like the others, not left running a script after
    fioca has said it was interrupted (its jail alive, its work dir holding the root key,
    the journal not naming it)."""
    answer_with(monkeypatch, sandbox, changed(sandbox, **{script: f"sh -c 'sleep {LONG}; : {marker}'" for script in SIGNING}))
    real_start = threading.Thread.start

    def start(thread):
        real_start(thread)
        if thread.name == f"fioca-{facts.SIGN_CA_CSR}":  # it runs; the interrupt comes before start() returns
            raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start)
    pki = tmp_path / "pki"
    try:
        result = cli("keys", "ca", "create", pki, "--yes", "--allow-unaudited", env=sandbox_env)
        assert result.exit_code == 130, result.output
        assert f"Interrupted (finished: {facts.CREATE_CA})" in result.stderr, result.stderr
        # When create returns, no step of it is at work any more (none is waited for here).
        assert _fioca_threads() == [] and _processes_with(marker) == []
        assert leftovers(pki) == []
        assert Journal.load(PkiDir.open(pki)).running == []
    finally:
        for pid in _pids_with(marker):  # what a failure left: ended, not left to the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _pids_with(marker: str) -> list[int]:
    """The processes whose command line holds `marker` (the scripts this test started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and "pytest" not in cmdline:
                found.append(int(entry.name))
    return found


def test_a_step_whose_lines_cannot_be_shown_can_still_be_stopped(tmp_path, marker):
    """A terminal that takes no more output (a paused pager, Ctrl-S) blocks the thread showing
    a step's stderr line; stopping that step (Ctrl-C, an earlier step's failure) must still kill
    its jail at once, not wait for the terminal."""
    from fioca.errors import ScriptError
    from fioca.pki import jail as jails
    from fioca.pki.scripts import ScriptRunner
    from fioca.pki.step_runs import StepRun

    work_dir = tmp_path / "work"
    work_dir.mkdir(mode=0o700)
    showing, terminal_back = threading.Event(), threading.Event()

    def work(run):
        runner = ScriptRunner(work_dir, jail=jails.require(), on_stderr=run.line)
        run.attach(runner)
        runner.install("talks", f"#!/bin/sh -e\necho first >&2\nsh -c 'sleep {LONG}; : {marker}'\n")
        return runner.run("talks")

    def show(_line):
        showing.set()
        terminal_back.wait()

    run = StepRun("talks", work, show=show)
    run.start()
    run.shown()
    try:
        assert showing.wait(60), "the script's line never came"
        stopper = threading.Thread(target=run.stop)
        stopper.start()
        stopper.join(60)  # a deadlock, not a time: it returns at once or never
        stopped = not stopper.is_alive()
        assert stopped, "stop() waited for the terminal"
        deadline = time.monotonic() + 60  # the kill is sent; the kernel ends the jail soon after
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with(marker) == []  # gone while the terminal still takes nothing
        terminal_back.set()  # the step's lines drain; only then can its thread end
        run.join()
        with pytest.raises(ScriptError, match="stopped by fioca"):
            run.result()
    finally:
        terminal_back.set()
        run.stop()
        run.join()
