"""Reading network managers' config text: netplan YAML and systemd / NetworkManager INI.

Both readers take text (no I/O), so the checks built on them stay pure.
"""

from __future__ import annotations

import configparser
from typing import cast

import yaml

# PyYAML's YAML 1.1 typing would turn an unquoted MAC such as 10:22:33:44:55:50 into a
# base-60 integer and "1" into 1; netplan reads every scalar as text and interprets it by
# key. So keep only the booleans (true/yes/on ...) and null, and leave the rest as strings.
_KEPT_TAGS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:null")


class _NetplanLoader(yaml.SafeLoader):
    pass


_NetplanLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _KEPT_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str) -> object:
    """One netplan document: mappings, lists, strings, booleans and None.

    Raises ValueError on text that is not YAML (as the hand-written reader it replaces did).
    """
    try:
        # a SafeLoader subclass: plain data only, never arbitrary Python objects
        return cast(object, yaml.load(text, Loader=_NetplanLoader))
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).replace("\n", " ")) from exc


_PREAMBLE = "\x01 before the first section"
# section -> key -> every value the key was given, in file order
Ini = dict[str, dict[str, list[str]]]


class _MultiDict(dict[str, object]):
    """configparser's option store keeping repeated keys.

    While parsing, configparser stores each option as a list of lines and sets it again on
    a repeated key; systemd concatenates repeated keys (``Name=eth0`` then ``Name=eth1``,
    two ``[Address]`` sections) instead of keeping the last, so append instead.
    """

    def __setitem__(self, key: str, value: object) -> None:
        if isinstance(value, list) and key in self:
            held = super().__getitem__(key)
            if isinstance(held, list):
                held.extend(value)
                return
        super().__setitem__(key, value)


def read_ini(text: str) -> Ini:
    """A systemd unit (.network/.netdev) or NetworkManager keyfile.

    systemd quirks configparser must be told about: repeated sections and keys add up
    (strict=False plus ``_MultiDict``), keys keep their case (optionxform), ``%`` is not
    interpolation, only ``=`` separates a key from its value, and a line without ``=`` is
    ignored rather than an error. Leading blanks are stripped first: systemd ignores them,
    while configparser would read an indented line as the continuation of the previous value.
    """
    parser = configparser.RawConfigParser(
        strict=False,
        interpolation=None,
        allow_no_value=True,
        delimiters=("=",),
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=None,
        empty_lines_in_values=False,
        default_section="\0",  # no DEFAULT section: its keys would leak into every other
        dict_type=_MultiDict,  # type: ignore[arg-type]  # typeshed wants a dict[str, str] type
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    lines = [line.strip() for line in text.splitlines()]
    try:
        parser.read_string(f"[{_PREAMBLE}]\n" + "\n".join(lines))
    except configparser.Error:
        return {}
    out: Ini = {}
    for section in parser.sections():
        if section == _PREAMBLE:
            continue  # lines before the first section header: systemd ignores them too
        values = out.setdefault(section, {})
        for key, value in parser.items(section, raw=True):
            if value is not None:
                values.setdefault(key, []).extend(v.strip() for v in value.split("\n"))
    return {section: keys for section, keys in out.items() if keys}
