"""The CLI documents itself, and the README shows only commands and options that exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fertool.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def _commands() -> dict[str, click.Command]:
    ctx = click.Context(main)
    return {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}


def test_every_command_and_option_has_help():
    cmds = _commands()
    assert {"faces", "embed", "finetune", "info"} <= set(cmds)
    for name, cmd in cmds.items():
        assert cmd.help and len(cmd.help.strip()) > 20, f"{name} has no help text"
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert p.help, f"fertool {name} {p.opts[0]} has no help text"


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_runs(name):
    res = CliRunner().invoke(main, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage: " in res.output


def test_help_does_not_import_torch():
    code = ("import sys; from fertool.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'fertool --help imported torch'\n"
            "assert 'sklearn' not in sys.modules and 'onnxruntime' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _readme_commands() -> list[list[str]]:
    text = README.read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.DOTALL)
    cmds = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            line = line.removeprefix("$ ")
            if line.startswith("fertool "):
                cmds.append(shlex.split(line))
    return cmds


def test_readme_commands_exist_with_their_options():
    cmds = _commands()
    seen = _readme_commands()
    assert seen, "README shows no fertool command"
    for argv in seen:
        name = argv[1]
        if name.startswith("-"):
            continue
        assert name in cmds, f"README shows `fertool {name}`, which does not exist"
        known = {
            o
            for p in cmds[name].params
            for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])
        }
        known |= {"--help", "-h"}
        for tok in argv[2:]:
            if tok.startswith("--"):
                opt = tok.split("=")[0]
                assert opt in known, f"README: `fertool {name}` has no option {opt}"
