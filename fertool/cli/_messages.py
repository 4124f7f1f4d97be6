"""Library messages in the CLI's words: parameter names become the command's option flags.

Library errors name parameters, never flags: ``` `out` ```, ``force=True`` or ``fold=3``. The
CLI shows them as ``--out``, ``--force`` and ``--fold 3``, using the options of the command that
ran (plus :data:`PARAMETER_FLAGS` for parameters whose option is spelt differently).
"""

from __future__ import annotations

import re

import click

#: Library parameter -> option, where the option's parameter has another name.
PARAMETER_FLAGS = {
    "policy": "--face-policy",
    "face": "the face options",
    "limit": "--per-class",
    "per_class": "--per-class",
    "sample": "--sample",
    "tta_flip": "--tta-flip",
    "flip": "--tta-flip",
    "use_cache": "--no-cache",
}


def option_flags(command: click.Command | None) -> dict[str, str]:
    """Parameter name -> how the user spells it, for ``command``'s visible options."""
    flags = dict(PARAMETER_FLAGS)
    for p in command.params if command is not None else ():
        if isinstance(p, click.Option) and not p.hidden and p.name:
            flags[p.name] = max(p.opts, key=len)
    return flags


def to_flags(message: str, command: click.Command | None) -> str:
    """``message`` with the parameter names it quotes replaced by ``command``'s flags."""
    flags = option_flags(command)

    def named(m: re.Match) -> str:
        return flags.get(m.group(1), m.group(0))

    def flag(m: re.Match) -> str:
        return flags[m.group(1)] if m.group(1) in flags else m.group(0)

    def valued(m: re.Match) -> str:
        return f"{flags[m.group(1)]} " if m.group(1) in flags else m.group(0)

    message = re.sub(r"`([a-z][a-z0-9_]*)`", named, message)
    message = re.sub(r"\b([a-z][a-z0-9_]*)=True\b", flag, message)
    return re.sub(r"\b([a-z][a-z0-9_]*)=(?=[^=\s])", valued, message)
