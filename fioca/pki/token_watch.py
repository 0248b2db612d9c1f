"""What an HSM-mode script left on its token, and what of it goes.

A script in HSM mode holds the PIN and, with SoftHSM2, the token's own folder read-write
(fioca/pki/jail.py binds it): what it stores there outlives the run, the PIN beside the key it
unlocks. `TokenWatch` looks at the token before each script and after it, however the script
ended, and removes what fioca's scripts never make there; the run then stops with one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import uuid
from collections import Counter
from typing import Any

from fioca.errors import ConfigError, ScriptError
from fioca.pki.hsm import ROOT_KEY_KINDS, HsmSettings, PinRefused, pkcs11_api, session

# The files SoftHSM2 keeps in a token's folder: its lock files stay empty, `generation` is 8 bytes (a count).
_SOFTHSM2_FILE = re.compile(r"generation|token\.object|token\.lock|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\.(?:object|lock)")
# With SoftHSM2's db back end, its database (and what sqlite keeps beside it while it writes).
_SOFTHSM2_DB_FILE = re.compile(r"sqlite3\.db(?:-journal|-wal|-shm)?")
_SOFTHSM2_OBJECT = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\.object")


class TokenWatch:
    """What an HSM-mode script left on its token. It holds the PIN and the token's folder
    read-write, so what it stores there outlives the run (the PIN in a file beside the key).
    After each script the token holds no object it did not hold before but the halves of one
    `root-ca` key pair (id 01), and, with SoftHSM2, the token's folder holds only the files
    SoftHSM2 makes, one object file per object and one new file per new object. Anything else
    is removed where it can be told apart, and the run refused; a changed PIN too.

    What no check here can see: bytes hidden inside SoftHSM2's own files, or in attributes of
    the root-ca objects fioca does not read (the README's security notes)."""

    def __init__(self, settings: HsmSettings, folder: str | None, *, backend: str = "file"):
        self.settings = settings
        self.folder = folder  # the token's own folder in a SoftHSM2 store, else None
        # SoftHSM2's file back end keeps a file per object; its db back end, one sqlite3.db.
        self.object_folder = folder if backend == "file" else None
        self.own = _SOFTHSM2_FILE if backend == "file" else _SOFTHSM2_DB_FILE
        self.before = token_objects(settings)
        self.files = set(_object_files(folder)) if self.object_folder else set()  # its object files, by name
        self.mode = stat.S_IMODE(os.stat(folder).st_mode) if folder else 0  # the script may chmod it
        self.generation = (_generation(folder) or 0) if self.object_folder else 0

    def check(self, script: str) -> None:
        """Raise ScriptError (after removing what was left) when `script` left anything else."""
        if self.folder:
            _set_mode(self.folder, self.mode)
        left = _stray_files(self.folder, self.own) if self.folder else []
        count = _generation(self.folder) if self.object_folder else None
        if count is not None and not self.generation <= count < self.generation + _GENERATION_STEP:
            # SoftHSM2 counts a token's changes there, a few a script: 8 bytes of its own (the
            # PIN's, say) otherwise. Removed, SoftHSM2 makes it again.
            _remove_object_files(self.folder, ["generation"])
            left.append("generation")
        flood = sorted(set(_object_files(self.folder)) - self.files) if self.object_folder else []
        if len(flood) > _MAX_NEW_OBJECTS:
            # Each copy of an object file is an object SoftHSM2 loads, and each destroy rescans
            # the folder: thousands took the watch minutes (100,000: hours). They go as files.
            _remove_object_files(self.folder, flood)
            left.append(f"{len(flood)} object files")
        try:
            now = token_objects(self.settings)
        except PinRefused:
            raise self._pin_changed(script, left) from None
        except ConfigError as error:  # it was there before the script: "check --hsm-token-label" is not the cause
            raise ScriptError(
                f"script {script} left the HSM token unusable ({error.message}); nothing it made was used: look at the "
                "token before you use it again"
            ) from None
        # The key pair the scripts make: labelled root-ca, id 01 (an id is the script's to choose:
        # the PIN fits), one of each (a second one is no root: its public point may be the PIN's).
        foreign = {kind for kind in now - self.before if kind not in ROOT_KEY_KINDS or now[kind] > 1}
        left += [f"{name} {_named(label, quoted=True)}" for name, label, _id in foreign]
        # PKCS#11 tells a kind the token did not hold before; of two alike, not which one is new.
        try:
            _destroy(self.settings, {kind for kind in foreign if not self.before[kind]})
            kept = any(self.before[kind] for kind in foreign)
        except ConfigError:  # refused (CKA_DESTROYABLE false): in a SoftHSM2 folder, its file goes
            kept = True
        if self.object_folder:
            # The objects as they are now: read again only when some were destroyed above.
            left += self._object_files_made(script, token_objects(self.settings) if foreign else now, remove=kept)
        elif kept:
            raise ScriptError(
                f"script {script} left on the HSM token what fioca never makes there ({_some(left)}); "
                "what could be told apart from the token's own objects was removed, nothing the script made was "
                "used: look at the token before you use it again"
            )
        if left:
            raise ScriptError(
                f"script {script} left on the HSM token what fioca never makes there ({_some(left)}); "
                "it was removed and nothing the script made was used"
            )

    def _object_files_made(self, script: str, now: Counter[tuple[str, str, bytes]], *, remove: bool) -> list[str]:
        """The SoftHSM2 folder holds one object file per object, one new file per new object.
        Else (a file named as SoftHSM2 names an object, the PIN in it, that the token does not
        show; an object put in place of one the script deleted, the root's public key), or with
        `remove`, which file is which cannot be told: every object file the script made goes,
        and their names are returned. `now`: the objects the token shows."""
        files = _object_files(self.object_folder)
        made = sorted(set(files) - self.files)
        if not remove and len(made) == sum((now - self.before).values()) and len(files) == sum(now.values()):
            _renamed(self.object_folder, made)  # their names (UUIDs) were the script's to choose: the PIN's, say
            return []
        _remove_object_files(self.object_folder, made)
        if len(_object_files(self.object_folder)) != sum(token_objects(self.settings).values()):
            raise ScriptError(
                f"script {script} left object files in the HSM token's folder {self.folder} that the token does "
                "not show; nothing it made was used: look at the folder before you use the token again"
            )
        return made

    def _pin_changed(self, script: str, left: list[str]) -> ScriptError:
        """The script changed the PIN (or locked the token): fioca no longer logs in. What it
        left in the objects anyone reads without the PIN (the new PIN, say) is removed."""
        foreign: set[tuple[str, str, bytes]] = set()
        with contextlib.suppress(ConfigError):  # the message below is the one to give, whatever else fails
            found = {kind for kind in token_objects(self.settings, login=False) - self.before if not self.before[kind]}
            _destroy(self.settings, found, login=False)
            foreign = found
        removed = [*left, *(f"{name} {_named(label, quoted=True)}" for name, label, _id in foreign)]
        what = f" (removed what it left: {_some(removed)})" if removed else ""
        return ScriptError(
            f"script {script} changed the PIN of HSM token '{self.settings.token_label}' or locked it: fioca's "
            f"PIN no longer logs in{what}; nothing the script made was used: set a new user PIN with the SO PIN "
            "before you use the token again"
        )


def token_objects(settings: HsmSettings, *, login: bool = True) -> Counter[tuple[str, str, bytes]]:
    """Every object the token shows once logged in (only its public ones without `login`), as (kind, label, id)."""
    with session(settings, login=login) as sess:
        return Counter(_kind_of(found) for found in sess.get_objects())


def _destroy(settings: HsmSettings, kinds: set[tuple[str, str, bytes]], *, login: bool = True) -> None:
    if not kinds:
        return
    with session(settings, rw=True, login=login) as sess:
        for found in list(sess.get_objects()):
            if _kind_of(found) in kinds:
                found.destroy()


def _kind_of(found: Any) -> tuple[str, str, bytes]:
    """(kind, label, id): "data", "private key", ... as PKCS#11 names the class."""
    attribute = pkcs11_api().Attribute
    kind = _attribute(found, attribute.CLASS, None)
    name = kind.name.lower().replace("_", " ") if kind is not None else "object"
    return name, _attribute(found, attribute.LABEL, ""), bytes(_attribute(found, attribute.ID, b""))


# What a label that is not UTF-8 reads as (python-pkcs11 decodes labels): never root-ca.
_UNDECODABLE = "<not UTF-8>"


def _attribute(found: Any, name: Any, default: Any) -> Any:
    errors = pkcs11_api().exceptions
    try:
        return found[name]
    except (errors.AttributeTypeInvalid, errors.AttributeSensitive):
        return default
    except UnicodeDecodeError:
        return _UNDECODABLE


def _stray_files(folder: str, own: re.Pattern[str] = _SOFTHSM2_FILE) -> list[str]:
    """Remove and name what SoftHSM2 does not keep in a token's folder: another name, not a
    regular file, a second link, a lock file with content or with no file it locks (SoftHSM2
    makes and removes the two together: the lock's name, a UUID, could spell the PIN), a
    `generation` that is not 8 bytes."""
    from fioca.pki.files import remove_tree

    strays = []
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        names = os.listdir(fd)
        locked = {name.removesuffix(".object") + ".lock" for name in names if name.endswith(".object")}
        for name in names:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            ours = own.fullmatch(name) and stat.S_ISREG(st.st_mode) and st.st_nlink == 1
            lock = name.endswith(".lock") and own is _SOFTHSM2_FILE
            if ours and not (lock and (st.st_size or name not in locked)) and not (name == "generation" and st.st_size != 8):
                continue
            strays.append(_named(name))
            remove_tree(fd, name)
    finally:
        os.close(fd)
    return strays


# How far a script may move SoftHSM2's change count (it makes a key pair: a few).
_GENERATION_STEP = 1 << 16
# New object files a script may leave before the watch asks the module (a key pair: two).
_MAX_NEW_OBJECTS = 16


def _generation(folder: str) -> int | None:
    """SoftHSM2's change count in a token's folder (None when it has none yet)."""
    try:
        fd = os.open(os.path.join(folder, "generation"), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return int.from_bytes(os.read(fd, 8), "big")
    finally:
        os.close(fd)


def _some(names: list[str], shown: int = 8) -> str:
    """`names` for a one-line message: the first few, sorted, and how many more."""
    names = sorted(names)
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _named(text: str, *, quoted: bool = False) -> str:
    """A name or label the script chose, for a one-line message: repr() when it holds a newline
    or anything else not printable (a forged line after it), else as it is (in quotes)."""
    if not text.isprintable():
        return repr(text)
    return f"'{text}'" if quoted else text


def _set_mode(folder: str, mode: int) -> None:
    """The token's folder given back the mode it had (`chmod 0` kept the watch out)."""
    # O_PATH needs no permission on the folder; its /proc link is this very folder, not a path looked up again.
    handle = os.open(folder, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if stat.S_IMODE(os.fstat(handle).st_mode) != mode:
            os.chmod(f"/proc/self/fd/{handle}", mode)
    finally:
        os.close(handle)


def _object_files(folder: str) -> list[str]:
    return [name for name in os.listdir(folder) if _SOFTHSM2_OBJECT.fullmatch(name)]


def _renamed(folder: str, names: list[str]) -> None:
    """The object files `names` (and their lock files) under UUIDs fioca draws: SoftHSM2 finds
    a token's objects by listing its folder, whatever their names."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in names:
            stem, new = name.removesuffix(".object"), str(uuid.uuid4())
            for suffix in (".object", ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(stem + suffix, new + suffix, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


def _remove_object_files(folder: str, names: list[str]) -> None:
    """Remove the files `names` of the token's folder, an object file with its lock file."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in names:
            for each in dict.fromkeys((name, name.removesuffix(".object") + ".lock") if name.endswith(".object") else (name,)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(each, dir_fd=fd)
    finally:
        os.close(fd)
