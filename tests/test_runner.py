"""The one script runner (fioca/pki/scripts.py): what it gives a script, how it stops one, and
how it takes a script's products without trusting them. Real bwrap, sh and openssl.

Every product a script leaves is hostile until taken: a symlink (`tls-crt ->
~/.ssh/authorized_keys`), a hard link (`ln factory_ca.key x`), a FIFO, a folder, a file too
big: each is refused with one clear line, and nothing outside the work dir is read or
written through it. The twins: a plain file is taken, byte for byte.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fioca
from fioca.errors import ScriptError
from fioca.pki import jail as jails
from fioca.pki.scripts import ScriptLimits, ScriptRunner, take

JAIL = jails.require()


@pytest.fixture
def work(tmp_path) -> Path:
    path = tmp_path / "work"
    path.mkdir(mode=0o700)
    return path


def runner_for(work: Path, **options) -> ScriptRunner:
    return ScriptRunner(work, jail=JAIL, **options)


# --- What a script gets ----------------------------------------------------------------------


@pytest.mark.parametrize("jail", [JAIL, jails.NO_JAIL], ids=["jail", "no-jail"])
def test_a_script_gets_a_minimal_environment_and_umask(work, monkeypatch, jail):
    monkeypatch.setenv("FIOCTL_TOKEN", "secret-token-value")
    monkeypatch.setenv("HSM_PIN", "1234-not-passed")
    runner = ScriptRunner(work, jail=jail, env_extra={"FACTORY": "acme"})
    runner.install("show_env", "#!/bin/sh -e\nset\numask\n")
    out = runner.run("show_env").decode()
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    shell_own = {"IFS", "OPTIND", "PPID", "PS1", "PS2", "PS4", "PWD"}
    assert names - shell_own == {"PATH", "HOME", "TMPDIR", "LC_ALL", "FACTORY"}
    assert "secret-token-value" not in out and "1234-not-passed" not in out
    assert out.strip().splitlines()[-1] == "0077"
    home = jails.WORK_DIR if jail.contained else str(work)
    assert f"HOME='{home}'" in out and f"PWD='{home}'" in out


def test_stdout_is_bytes_and_stderr_comes_line_by_line(work):
    lines: list[str] = []
    runner = runner_for(work, on_stderr=lines.append)
    runner.install("talk", "#!/bin/sh -e\nprintf 'a\\0b\\377'\necho one >&2\nprintf 'two' >&2\n")
    assert runner.run("talk") == b"a\0b\xff"
    assert lines == ["one", "two"]


def test_a_failing_script_is_one_line_with_its_last_words(work):
    runner = runner_for(work)
    runner.install("fails", "#!/bin/sh -e\necho 'openssl: bad key' >&2\nexit 3\n")
    with pytest.raises(ScriptError, match=r"^script fails exited with status 3: openssl: bad key$"):
        runner.run("fails")


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_an_output_flood_is_killed(work, stream):
    runner = runner_for(work, limits=ScriptLimits(max_stdout=4096, max_stderr=4096))
    redirect = ">&2" if stream == "stderr" else ""
    runner.install("flood", f"#!/bin/sh -e\nwhile :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx {redirect}; done\n")
    with pytest.raises(ScriptError, match=f"wrote more than 4096 bytes to {stream} and was killed"):
        runner.run("flood")


def test_a_jail_whose_pid_1_was_gone_too_soon_is_not_killed_by_its_number_late(work, monkeypatch):
    """A script that ends before fioca has its pidfd on the jail's PID 1 (pidfd_open finds no
    process) leaves fioca no pidfd: then the jail is already ending by itself, and bwrap's pid,
    reaped by the wait, may name another process by the time a kill (the last one after the
    wait, a stop() from another thread) comes. No process group is signalled by a number
    fioca has already reaped."""

    def gone(_pid, *_flags):
        raise ProcessLookupError

    signalled: list[tuple[int, bool]] = []
    real_killpg = os.killpg

    def killpg(pid, sig):
        signalled.append((pid, os.path.exists(f"/proc/{pid}")))  # a reaped, unreused pid has none
        return real_killpg(pid, sig)

    monkeypatch.setattr(jails.os, "pidfd_open", gone)
    monkeypatch.setattr(os, "killpg", killpg)
    runner = runner_for(work)
    runner.install("quick", "#!/bin/sh -e\necho made\n")
    assert runner.run("quick") == b"made\n"
    runner.stop()  # from another step's failure, after the run: nothing of it is left to kill
    assert [pid for pid, alive in signalled if not alive] == []


def test_a_script_that_waits_on_stdin_gets_end_of_file(work):
    runner = runner_for(work)
    runner.install("reader", "#!/bin/sh -e\ncat\necho done\n")
    assert runner.run("reader") == b"done\n"


def test_with_the_jail_a_log_file_in_home_is_no_refusal(work, home):
    """Issue 10.10: the user's own files changing during a script stop nothing."""
    log = home / "session.log"
    runner = runner_for(work)
    runner.install("slow", "#!/bin/sh -e\necho started >&2\n")
    runner.on_stderr = lambda _line: log.write_text(log.read_text() + "line\n" if log.exists() else "line\n")
    assert runner.run("slow") == b""
    assert log.read_text() == "line\n"


# --- Writing inputs ----------------------------------------------------------------------------


def test_install_and_put_write_new_files_with_their_modes(work):
    runner = runner_for(work)
    script = runner.install("create_ca", "#!/bin/sh\n")
    csr = runner.put("tls-csr", b"CSR")
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    assert stat.S_IMODE(csr.stat().st_mode) == 0o600 and csr.read_bytes() == b"CSR"
    with pytest.raises(ScriptError, match="tls-csr already exists in the work dir .* never writes over it"):
        runner.put("tls-csr", b"other")
    assert csr.read_bytes() == b"CSR"


def test_no_script_starts_while_another_thread_writes_a_work_dir_file(work, tmp_path, monkeypatch):
    """A process forked while a script file is open for writing holds that fd until it execs,
    and the script's own exec fails with "Text file busy" meanwhile (seen with create's steps
    side by side). So a start waits for a write under way, and the file is closed first."""
    from fioca.pki import scripts as scripts_module

    events: list[str] = []
    writing, trying = threading.Event(), threading.Event()
    real_fdopen = os.fdopen

    class SlowFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            events.append("file closed")

        def fileno(self):
            return self.handle.fileno()

        def write(self, data):
            events.append("writing")
            writing.set()
            assert trying.wait(30)
            time.sleep(0.2)  # a start that did not wait would fork now
            return self.handle.write(data)

    second = tmp_path / "second"
    second.mkdir(mode=0o700)
    starter = runner_for(second)
    starter.install("noop", "#!/bin/sh\n:\n")
    monkeypatch.setattr(scripts_module.os, "fdopen", lambda fd, mode: SlowFile(real_fdopen(fd, mode)))
    real_command = scripts_module.sh.Command

    def command(path):
        events.append("fork")
        return real_command(path)

    monkeypatch.setattr(scripts_module.sh, "Command", command)

    def start_while_writing():
        assert writing.wait(30)
        trying.set()
        starter.run("noop")

    thread = threading.Thread(target=start_while_writing)
    thread.start()
    runner_for(work).install("create_ca", "#!/bin/sh\n")
    thread.join(60)
    assert events == ["writing", "file closed", "fork"]


def test_put_never_writes_through_a_planted_symlink(work, home):
    """A script leaves `tls-crt -> ~/.ssh/authorized_keys`; fioca then writes tls-crt itself."""
    (home / ".ssh").mkdir()
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAA user\n")
    (work / "tls-crt").symlink_to(keys)
    runner = runner_for(work)
    with pytest.raises(ScriptError, match="already exists"):
        runner.put("tls-crt", b"CERT")
    runner.put("tls-crt", b"CERT", replace=True)
    assert keys.read_text() == "ssh-ed25519 AAAA user\n"
    assert not (work / "tls-crt").is_symlink() and (work / "tls-crt").read_bytes() == b"CERT"


def test_put_refuses_a_folder_planted_under_its_name(work):
    (work / "tls-crt").mkdir()
    with pytest.raises(ScriptError, match="cannot write tls-crt in the work dir .*: Is a directory"):
        runner_for(work).put("tls-crt", b"CERT", replace=True)


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "", "."])
def test_names_are_plain_file_names(work, name):
    with pytest.raises(ScriptError, match="not a plain file name"):
        runner_for(work).put(name, b"x")
    assert not (work.parent / "escape").exists()


# --- Taking products -----------------------------------------------------------------------------


def bring(work: Path, tool: str) -> None:
    """A script can bring any program it likes into its work dir (`ln` is not in the jail)."""
    shutil.copy(shutil.which(tool), work / tool)


def test_a_plain_product_is_taken_byte_for_byte(work):
    runner = runner_for(work)
    runner.install("make", "#!/bin/sh -e\nopenssl ecparam -genkey -name prime256v1 -noout -out factory_ca.key\n")
    runner.run("make")
    data = runner.take("factory_ca.key")
    assert data.startswith(b"-----BEGIN EC PRIVATE KEY-----") and data == (work / "factory_ca.key").read_bytes()


def test_a_symlinked_product_is_refused_and_not_read(work, home):
    (home / ".ssh").mkdir()
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAA user\n")
    bring(work, "ln")
    runner = runner_for(work)
    runner.install("plant", f"#!/bin/sh -e\n./ln -s {keys} tls-crt\n./ln -s /etc/hostname factory_ca.pem\n")
    runner.run("plant")
    assert os.readlink(work / "tls-crt") == str(keys)
    for name in ("tls-crt", "factory_ca.pem"):
        with pytest.raises(ScriptError, match=rf"^{name} is a symbolic link; fioca takes only regular files"):
            runner.take(name)
    assert keys.read_text() == "ssh-ed25519 AAAA user\n"


def test_a_hard_linked_product_is_refused(work):
    bring(work, "ln")
    runner = runner_for(work)
    runner.install(
        "link", "#!/bin/sh -e\nopenssl ecparam -genkey -name prime256v1 -noout -out factory_ca.key\n./ln factory_ca.key x\n"
    )
    runner.run("link")
    for name in ("factory_ca.key", "x"):
        with pytest.raises(ScriptError, match=rf"^{name} has 2 hard links \(a product may have one\)"):
            runner.take(name)


def test_a_hard_link_to_a_file_outside_cannot_even_be_made(work, tmp_path):
    outside = tmp_path / "outside.key"
    outside.write_text("KEY")
    bring(work, "ln")
    runner = runner_for(work)
    runner.install("link", f"#!/bin/sh -e\n./ln {outside} stolen\n")
    with pytest.raises(ScriptError, match="exited with status 1"):
        runner.run("link")
    assert outside.stat().st_nlink == 1


def test_a_fifo_product_is_refused_without_hanging(work):
    os.mkfifo(work / "tls-crt")  # as a script's own mkfifo would leave it
    with pytest.raises(ScriptError, match=r"^tls-crt is a FIFO, not a regular file"):
        runner_for(work).take("tls-crt")


def test_a_folder_product_is_refused(work):
    runner = runner_for(work)
    runner.install("folder", "#!/bin/sh -e\nmkdir tls-crt\n")
    runner.run("folder")
    with pytest.raises(ScriptError, match=r"^tls-crt is a folder, not a regular file"):
        runner.take("tls-crt")


def test_an_oversized_product_is_refused(work):
    runner = runner_for(work, limits=ScriptLimits(max_product=65536))
    runner.install("big", "#!/bin/sh -e\nhead -c 65537 /dev/zero > local-ca.pem\nhead -c 65536 /dev/zero > ok\n")
    runner.run("big")
    with pytest.raises(ScriptError, match=r"^local-ca.pem is 65537 bytes, more than the 65536 a product may be"):
        runner.take("local-ca.pem")
    assert runner.take("ok") == bytes(65536)


def test_a_missing_product_is_named(work):
    with pytest.raises(ScriptError, match=r"^local-ca.pem was not written"):
        take(work, "local-ca.pem")


# --- The work dir ----------------------------------------------------------------------------------


def test_the_work_dir_must_be_a_private_folder_of_ours(tmp_path, work):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ScriptError, match=r"work dir .*/link is a symbolic link"):
        runner_for(tmp_path / "link")
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o700)
    loose.chmod(0o755)
    with pytest.raises(ScriptError, match=r"work dir .*/loose is mode 0755, not 0700"):
        runner_for(loose)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(ScriptError, match=r"work dir .*/theirs is owned by uid 65534, not you"):
        runner_for(theirs)
    runner_for(work).install("ok", "#!/bin/sh\n")  # the twin: a 0700 folder of ours


def test_a_work_dir_swapped_for_a_symlink_later_is_refused_at_take(tmp_path, work):
    runner = runner_for(work)
    runner.put("tls-crt", b"CERT")
    work.rename(tmp_path / "moved")
    (tmp_path / "work").symlink_to(tmp_path / "moved")
    with pytest.raises(ScriptError, match="is a symbolic link"):
        runner.take("tls-crt")


# --- The work dir's removal --------------------------------------------------------------------
# A script runs as fioca's uid and may leave any mode on the folders it makes: removal must still
# take everything (a copy of the root key may be inside). Root (CI) passes any mode, so the
# removal runs in a process that obeys mode bits: root with every capability dropped (another
# user as they are).

AS_A_USER = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--"] if os.geteuid() == 0 else []


def as_a_user(code: str, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(fioca.__file__).parents[1])}  # the fioca under test
    return subprocess.run([*AS_A_USER, sys.executable, "-c", code, *map(str, args)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def removed_as_a_user(work: Path) -> None:
    code = "import sys\nfrom fioca.pki.files import PkiDir\nwith PkiDir.open(sys.argv[1]) as pki:\n    pki.remove_folder(sys.argv[2])"
    done = as_a_user(code, work.parent, work.name)
    assert done.returncode == 0, done.stderr
    assert not work.exists()


def test_the_removal_runs_where_modes_bind(work):
    (work / "d").mkdir()
    (work / "d").chmod(0)
    done = as_a_user("import os, sys\nos.listdir(sys.argv[1])", work / "d")
    assert "PermissionError" in done.stderr  # or the tests below would prove nothing
    (work / "d").chmod(0o700)


def key_in(folder: Path, *modes: int) -> None:
    """folder/a/b/.../factory_ca.key, one level per mode, each level then given its mode."""
    levels = [folder.joinpath(*"abcdef"[: depth + 1]) for depth in range(len(modes))]
    levels[-1].mkdir(parents=True)
    (levels[-1] / "factory_ca.key").write_bytes(b"KEY")
    for level, mode in reversed(list(zip(levels, modes))):
        level.chmod(mode)


@pytest.mark.parametrize("modes", [(0,), (0o500,), (0o100,), (0o700, 0, 0o500, 0)], ids=["0", "0500", "0100", "nested"])
def test_a_work_dir_goes_whatever_modes_a_script_left(work, modes):
    key_in(work, *modes)
    (work / "plain").write_bytes(b"")
    removed_as_a_user(work)


@pytest.mark.parametrize("mode", [0, 0o500, 0o777], ids=oct)
def test_a_work_dir_the_script_chmodded_itself_goes(work, mode):
    """`chmod 0 .` (or 0777, which a folder fioca uses would be refused for) inside the work dir."""
    key_in(work, 0)
    work.chmod(mode)
    removed_as_a_user(work)


def nested(top: Path, depth: int, mode: int) -> None:
    """top/d/d/.../d (depth levels, a path longer than PATH_MAX) holding factory_ca.key, each
    level then given `mode`; one folder open at a time, through fds."""
    here = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=here)
        here, above = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=here), here
        os.close(above)
    os.close(os.open("factory_ca.key", os.O_WRONLY | os.O_CREAT, 0o400, dir_fd=here))
    for _ in range(depth):  # back up, each level given its mode from the one above
        here, below = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=here), here
        os.close(below)
        os.chmod("d", mode, dir_fd=here)
    os.close(here)


def test_a_tree_deeper_than_the_recursion_and_fd_limits_goes(work, request):
    """A script nested folders 3,000 deep with a key copy at the bottom: a recursive removal hit
    Python's recursion limit, and one holding a folder open per level would hit the fd limit
    (64 here) long before."""
    request.addfinalizer(lambda: subprocess.run(["rm", "-rf", str(work)], check=False))  # pytest's rmtree would recurse
    nested(work, 3000, 0o500)
    code = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
            "from fioca.pki.files import PkiDir\nwith PkiDir.open(sys.argv[1]) as pki:\n    pki.remove_folder(sys.argv[2])")
    done = as_a_user(code, work.parent, work.name)
    assert done.returncode == 0, done.stderr
    assert not work.exists()

@pytest.mark.parametrize("nth", [1, 2], ids=["the top", "below"])
def test_a_removal_that_fails_inside_says_why_and_closes_what_it_opened(work, monkeypatch, nth):
    """A folder that cannot be emptied (EPERM, EMFILE). Below the top, the walk had closed the
    folder above and not yet taken the one below as its own, so its `finally` closed the
    closed fd again (EBADF in place of the cause; in offline's threads, another thread's fd
    that took the number) and left the one below open; the top was emptied before the `try`,
    its fd left open."""
    from fioca.pki import files

    key_in(work, 0o700)
    real = files._emptied_but_folders
    calls = []

    def failing(fd: int) -> list[str]:
        calls.append(fd)
        if len(calls) == nth:
            raise PermissionError(1, "Operation not permitted")
        return real(fd)

    monkeypatch.setattr(files, "_emptied_but_folders", failing)
    parent = os.open(work.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        opened = sorted(os.listdir("/proc/self/fd"))
        with pytest.raises(PermissionError):
            files.remove_tree(parent, work.name)
        assert sorted(os.listdir("/proc/self/fd")) == opened
    finally:
        os.close(parent)


def test_a_wide_tree_goes(work):
    for index in range(2000):
        key_in(work / f"w{index}", 0o500)
    removed_as_a_user(work)


def test_a_symlink_inside_is_removed_not_followed(work, tmp_path):
    outside = tmp_path / "outside"
    key_in(outside, 0o500)
    outside.chmod(0o500)
    (work / "link").symlink_to(outside)
    key_in(work, 0)
    (work / "a" / "link").symlink_to(outside / "a")  # inside a mode-0 folder
    removed_as_a_user(work)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o500
    assert stat.S_IMODE((outside / "a").stat().st_mode) == 0o500
    assert (outside / "a" / "factory_ca.key").read_bytes() == b"KEY"


def test_partial_folders_and_device_work_dirs_go_whatever_their_modes(tmp_path):
    """OUT's `.partial-*` entries (a killed run's too): a faithful batch's work dir held local-ca.key."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    key_in(out / ".partial-1.work", 0)
    key_in(out / ".partial-1", 0o500)
    key_in(outside, 0o500)
    (out / ".partial-2").symlink_to(outside)
    (out / "done").mkdir()
    done = as_a_user("import sys\nfrom pathlib import Path\nfrom fioca.device import batch\nbatch.remove_partials(Path(sys.argv[1]))", out)
    assert done.returncode == 0, done.stderr
    assert os.listdir(out) == ["done"]
    assert (outside / "a" / "factory_ca.key").read_bytes() == b"KEY"
