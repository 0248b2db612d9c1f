"""fioctl's command lines, made into ones Click parses the same way.

fioctl is a cobra program, and its users type what cobra accepts:

- `-f/--factory` and `-t/--token` are persistent flags of `keys`, so they may come anywhere
  after it (`fioctl keys ca create ./pki -f acme`); `-c/--config` and `-v/--verbose` belong
  to the root and may come anywhere at all. In fioca they are options of the root command,
  so they are moved in front of the first command name. `-f`/`-t` move only under `keys` and
  under the `device` commands fioctl's `devices` has (`list-denied`, `delete-denied`):
  `device register -t` is lmp-device-register's `--tags`.
- booleans take a value: `--online-ca=false`, `--local-ca=true`, `--dry-run=1` (Go's
  strconv.ParseBool spellings). They become `--online-ca` / `--no-online-ca`, or are dropped
  for a flag that is off by default.
- a short option's value may follow an `=`: `-f=acme`.
- `device register` mirrors lmp-device-register, a boost program whose booleans take their
  value as the next word too (`--force 1`, `--use-ostree-server 0`, `-p true`): there, a flag
  followed by such a word takes it as its value.

The tree of commands is read to know which options take a value, so a value is never mistaken
for an option or a command name.
"""

from __future__ import annotations

from typing import Any

from typer import BadParameter

# Global options (in the root) and whether each takes a value.
_ANYWHERE = {"-c": True, "--config": True, "-v": False, "--verbose": False, "--server": True}
_UNDER_KEYS = {"-f": True, "--factory": True, "-t": True, "--token": True}
KEYS_GROUP = "keys"
# fioctl's `devices` takes -f/-t too; fioca's `device` group for the commands they share.
FIOCTL_DEVICE_COMMANDS = (["device", "list-denied"], ["device", "delete-denied"])

# strconv.ParseBool
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
# Commands whose flags also take the next word as their value, and the words (boost's, any case).
_NEXT_WORD_BOOLEANS = {("device", "register")}
_BOOST_WORDS = {"1": "1", "true": "1", "yes": "1", "on": "1", "0": "0", "false": "0", "no": "0", "off": "0"}


def fioctl_style(args: list[str], root: Any) -> list[str]:
    """`args` rewritten so that Click reads them as cobra would (see the module docstring)."""
    hoisted: list[str] = []
    rest: list[str] = []
    command = root
    path: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if token == "--":
            rest += args[index - 1 :]
            break
        if not token.startswith("-") or token == "-":
            sub = _subcommand(command, token)
            if sub is not None:
                command = sub
                path.append(token)
            rest.append(token)
            continue
        name, value, attached = _split(token)
        fioctl_factory_flags = KEYS_GROUP in path[:1] or path[:2] in FIOCTL_DEVICE_COMMANDS
        globals_here = {**_ANYWHERE, **(_UNDER_KEYS if fioctl_factory_flags else {})}
        option = _option(command, name)
        takes_value = globals_here[name] if path and name in globals_here else not (option is None or _is_flag(option))
        if attached and not takes_value and (option is not None or name in globals_here):
            # `-vy`: a group of short flags; take the first, look at the rest again.
            args = [*args[:index], "-" + value, *args[index:]]
            value = None
        if path and name in globals_here:
            if takes_value and value is None:
                if index >= len(args):
                    raise BadParameter(f"{name} needs a value", param_hint=f"'{name}'")
                value = args[index]
                index += 1
            hoisted += [name, value] if takes_value else [name]
            continue
        if option is None:
            rest.append(token)
            continue
        if _is_flag(option):
            if value is None and tuple(path) in _NEXT_WORD_BOOLEANS and index < len(args):
                value = _BOOST_WORDS.get(args[index].lower())
                index += value is not None
            rest += _flag_tokens(option, name, value, token)
            continue
        rest += [name, value] if value is not None else [name]
        if value is None and index < len(args):
            rest.append(args[index])  # the option's value, whatever it looks like
            index += 1
    return hoisted + rest


def _split(token: str) -> tuple[str, str | None, bool]:
    """`--name=value`, `-f=value` and `-fvalue` into (name, value, attached): `attached` is
    True for `-fvalue`, which is a group of flags (`-vy`) when `-f` takes no value."""
    if token.startswith("--"):
        name, sep, value = token.partition("=")
        return name, (value if sep else None), False
    if len(token) > 2:
        if token[2] == "=":
            return token[:2], token[3:], False
        return token[:2], token[2:], True
    return token, None, False


def _subcommand(command: Any, name: str) -> Any | None:
    if not isinstance(getattr(command, "commands", None), dict):
        return None  # a command, not a group: `name` is an argument
    return command.get_command(None, name)


def _option(command: Any, name: str) -> Any | None:
    for param in getattr(command, "params", []):
        if name in getattr(param, "opts", ()) or name in getattr(param, "secondary_opts", ()):
            if getattr(param, "param_type_name", "") == "option":
                return param
    return None


def _is_flag(option: Any) -> bool:
    return bool(getattr(option, "is_flag", False) or getattr(option, "count", False))


def _flag_tokens(option: Any, name: str, value: str | None, token: str) -> list[str]:
    """A cobra-style `--flag=VALUE` as the flag Click knows, or nothing when it means "off"."""
    if value is None:
        return [name]
    if value not in _TRUE and value not in _FALSE:
        return [token]  # let Click say what is wrong with it
    wanted = value in _TRUE
    if name in option.secondary_opts:  # `--no-online-ca=true` means off
        wanted = not wanted
    if wanted:
        return [option.opts[0]]
    return [option.secondary_opts[0]] if option.secondary_opts else []
