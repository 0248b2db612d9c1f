"""How `fioca` ends when main() runs as the process's own command: without the interpreter's
teardown (fioca.cli._end_process) when nothing is left for it, as the interpreter ends
otherwise. Each case calls main() as the console script does, in a new process; a line written
after main() returns says whether main() ended the process itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RETURNED = "main() returned"
# stdout buffered, as it is for a pipe unless PYTHONUNBUFFERED says otherwise: what is left
# in the buffer is what the exit has to flush.
BUFFERED = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}


def _fioca(*argv: str, before: str = "", **run) -> subprocess.CompletedProcess:
    """`fioca argv` with `before` run first; `RETURNED` on stderr if main() came back."""
    script = (
        "import os, sys\n"
        f"{before}\n"
        "from fioca.cli import main\n"
        "code = main()\n"
        f"os.write(2, b'{RETURNED}\\n')\n"
        "sys.exit(code)\n"
    )
    run.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-c", script, *argv], stderr=subprocess.PIPE, text=True, env=BUFFERED,
                          timeout=60, **run)  # fmt: skip


def _answer(tmp_path: Path, script: str) -> Path:
    answer = tmp_path / "factory_certs.json"
    answer.write_text(json.dumps({"create_ca": script, "tls-csr": "x"}))
    return answer


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--version"], 0),
        (["--no-such-option"], 2),  # Typer's usage error
        (["keys", "ca", "extract", "create_ca", "--file", "/nonexistent/factory_certs.json"], 1),  # fioca's error
    ],
)
def test_the_exit_code_is_kept_and_main_ends_the_process(argv: list[str], code: int):
    done = _fioca(*argv)
    assert done.returncode == code, done.stderr
    assert RETURNED not in done.stderr


def test_output_through_a_pipe_is_complete(tmp_path: Path):
    """A megabyte through a pipe, and what an atexit handler writes after it (flushed last)."""
    script = "#!/bin/sh -e\n" + "echo 'a line of the script, to make it long'\n" * 25_000
    before = "import atexit\natexit.register(lambda: print('written at exit'))"
    done = _fioca("keys", "ca", "extract", "create_ca", "--file", str(_answer(tmp_path, script)), before=before)
    assert done.returncode == 0, done.stderr
    assert done.stdout == script + "\nwritten at exit\n"
    assert RETURNED not in done.stderr


def test_atexit_handlers_run_once():
    before = "import atexit\natexit.register(os.write, 2, b'handler ran\\n')"
    done = _fioca("--version", before=before)
    assert done.returncode == 0
    assert done.stderr.count("handler ran") == 1


def test_a_thread_still_running_gets_the_interpreters_exit():
    """A non-daemon thread is waited for, as Python waits, and its output is kept."""
    before = (
        "import threading, time\n"
        "def late():\n"
        "    time.sleep(0.5)\n"
        "    print('the thread finished')\n"
        "threading.Thread(target=late).start()"
    )
    done = _fioca("--no-such-option", before=before)
    assert done.returncode == 2
    assert done.stdout.endswith("the thread finished\n")
    assert RETURNED in done.stderr


def test_workers_still_running_are_ended_by_multiprocessing(tmp_path: Path):
    """multiprocessing's atexit handler ends a daemon worker (as the device batch's are)."""
    pid_file = tmp_path / "worker.pid"
    before = (
        "import multiprocessing, time\n"
        "worker = multiprocessing.get_context('fork').Process(target=time.sleep, args=(60,), daemon=True)\n"
        "worker.start()\n"
        f"open({str(pid_file)!r}, 'w').write(str(worker.pid))"
    )
    done = _fioca("--version", before=before)
    assert done.returncode == 0, done.stderr
    assert RETURNED not in done.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_a_closed_pipe_ends_as_python_ends_on_one():
    """Output left for the exit to flush into a closed pipe: Python's message and exit 120 (the
    atexit handlers, run before the flush was tried, are not run again)."""
    reference = "import sys\nprint('left in the buffer')\nsys.exit(1)"
    read, write = os.pipe()
    os.close(read)
    try:
        plain = subprocess.run([sys.executable, "-c", reference], stdout=write, stderr=subprocess.PIPE, text=True,
                               env=BUFFERED)  # fmt: skip
        done = _fioca("keys", "ca", "extract", "create_ca", "--file", "/nonexistent/factory_certs.json",
                      before="import atexit\natexit.register(os.write, 2, b'handler ran\\n')\nprint('left in the buffer')",
                      stdout=write)  # fmt: skip
    finally:
        os.close(write)
    assert plain.returncode == 120
    assert done.returncode == plain.returncode
    assert "BrokenPipeError" in plain.stderr and "BrokenPipeError" in done.stderr
    assert RETURNED in done.stderr
    assert done.stderr.count("handler ran") == 1


def test_a_closed_pipe_while_writing_is_typers_quiet_exit_1(tmp_path: Path):
    answer = _answer(tmp_path, "#!/bin/sh -e\n" + "echo more than a pipe holds\n" * 10_000)
    read, write = os.pipe()
    os.close(read)
    try:
        done = _fioca("keys", "ca", "extract", "create_ca", "--file", str(answer), stdout=write)
    finally:
        os.close(write)
    assert done.returncode == 1
    assert done.stderr == ""  # Typer turns EPIPE into exit 1 and keeps the exit quiet
