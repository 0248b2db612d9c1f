"""Options read as GNU getopt reads them, for the programs in the jail that write files.

`cp -t. src`, `cp --target=. src`, `sed --expression='w key' data` and `sed -new key` are how
GNU cp and sed take `-t .` and `-e 'w key'`: a reader that only knows `-t DIR` and
`--target-directory=DIR` takes the value for an operand, or the data file for the script,
and misses a write. `parse` reads short clusters (`-fp`, `-tDIR`, `-ne SCRIPT`), long options
(`--opt=value`, `--opt value`) and their unambiguous abbreviations, options after operands
(GNU permutes them) and `--`; what it cannot read the same way is reported as `unknown`, and
the caller rates it HIGH.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fioca.pki.audit.state import Field, Value


@dataclass(frozen=True)
class Spec:
    """One program's options. Short ones by letter; long ones by name with their `--`."""

    flags: str = ""
    values: str = ""  # short options that take a value (attached or the next argument)
    attached: str = ""  # short options whose value can only be attached (`sed -i.bak`)
    long_flags: frozenset[str] = frozenset()
    long_values: frozenset[str] = frozenset()
    long_optional: frozenset[str] = frozenset()  # `--in-place[=SUFFIX]`, `--backup[=CONTROL]`


@dataclass(eq=False)
class Parsed:
    """A command line read by its program's Spec: options in order, operands, unknown options."""

    options: list[tuple[str, Field | None]] = field(default_factory=list)  # ("-t", value) / ("--file", value)
    operands: list[Field] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def values(self, *names: str) -> list[Field]:
        return [value for name, value in self.options if name in names and value is not None]

    def has(self, *names: str) -> bool:
        return any(name in names for name, _value in self.options)


def parse(args: list[Field], spec: Spec) -> Parsed:
    parsed = Parsed()
    i = 0
    while i < len(args):
        arg = args[i]
        text = arg.text
        i += 1
        if not arg.value.known or not text.startswith("-") or text == "-":
            if not arg.value.known and text.startswith("-"):
                parsed.unknown.append(text)  # an option built at run time
            parsed.operands.append(arg)
        elif text == "--":
            parsed.operands.extend(args[i:])
            break
        elif text.startswith("--"):
            i = _long(args, i, arg, spec, parsed)
        else:
            i = _short(args, i, arg, spec, parsed)
    return parsed


def _long(args: list[Field], i: int, arg: Field, spec: Spec, parsed: Parsed) -> int:
    given, eq, value = arg.text.partition("=")
    known = spec.long_flags | spec.long_values | spec.long_optional
    name = given if given in known else None
    if name is None:
        matches = [option for option in known if option.startswith(given)]
        name = matches[0] if len(matches) == 1 else None
    if name is None:
        parsed.unknown.append(arg.text)
        return i
    if name in spec.long_values:
        if eq:
            parsed.options.append((name, _field(value, arg)))
        elif i < len(args):
            parsed.options.append((name, args[i]))
            return i + 1
        else:
            parsed.unknown.append(arg.text)
    elif name in spec.long_optional:
        parsed.options.append((name, _field(value, arg) if eq else None))
    elif eq:
        parsed.unknown.append(arg.text)  # a flag given a value
    else:
        parsed.options.append((name, None))
    return i


def _short(args: list[Field], i: int, arg: Field, spec: Spec, parsed: Parsed) -> int:
    letters = arg.text[1:]
    for index, letter in enumerate(letters):
        rest = letters[index + 1 :]
        if letter in spec.values:
            if rest:
                parsed.options.append((f"-{letter}", _field(rest, arg)))
            elif i < len(args):
                parsed.options.append((f"-{letter}", args[i]))
                return i + 1
            else:
                parsed.unknown.append(arg.text)
            return i
        if letter in spec.attached:
            parsed.options.append((f"-{letter}", _field(rest, arg) if rest else None))
            return i
        if letter not in spec.flags:
            parsed.unknown.append(arg.text)
            return i
        parsed.options.append((f"-{letter}", None))
    return i


def _field(text: str, like: Field) -> Field:
    return Field(Value.of(text, taints=like.value.taints), False, True, like.line)


# GNU coreutils' cp and mv, and GNU sed: the options scripts of this kind use. Recursive copies
# and links are read here and judged by the handlers.
CP = Spec(
    flags="abdfHiLlnPpRrsTuvx",
    values="St",
    long_flags=frozenset({"--archive", "--force", "--interactive", "--link", "--dereference", "--no-clobber",
                          "--no-dereference", "--recursive", "--remove-destination", "--symbolic-link", "--update",
                          "--verbose", "--one-file-system", "--no-target-directory", "--strip-trailing-slashes"}),
    long_values=frozenset({"--target-directory", "--suffix"}),
    long_optional=frozenset({"--backup", "--preserve"}),
)  # fmt: skip
MV = Spec(
    flags="bfinTuv",
    values="St",
    long_flags=frozenset({"--force", "--interactive", "--no-clobber", "--update", "--verbose", "--no-target-directory",
                          "--strip-trailing-slashes"}),
    long_values=frozenset({"--target-directory", "--suffix"}),
    long_optional=frozenset({"--backup"}),
)  # fmt: skip
SED = Spec(
    flags="nErsuz",
    values="efl",
    attached="i",
    long_flags=frozenset({"--quiet", "--silent", "--regexp-extended", "--separate", "--unbuffered", "--null-data",
                          "--posix", "--sandbox", "--debug"}),
    long_values=frozenset({"--expression", "--file", "--line-length"}),
    long_optional=frozenset({"--in-place"}),
)  # fmt: skip
INSTALL = Spec(
    flags="bcCdDpsTv",
    values="gmoStZ",
    long_flags=frozenset({"--compare", "--directory", "--preserve-timestamps", "--strip", "--no-target-directory",
                          "--verbose"}),
    long_values=frozenset({"--group", "--mode", "--owner", "--suffix", "--target-directory"}),
    long_optional=frozenset({"--backup"}),
)  # fmt: skip
