"""The ``fertool`` command line: a thin click layer over the library.

Owns: parsing options, calling one library function per command, printing, and turning library
errors into one-line messages (parameter names become the command's flags, ``_messages``).
May import: every layer of fertool (inside command bodies).

Each sub-command lives in its own module of this package and exposes a ``command`` attribute
(a :class:`click.Command`). Command modules import only click and the standard library at module
level; torch, onnxruntime and scikit-learn are imported inside the command body, so
``fertool --help`` stays instant.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from fertool.core.version import __version__


def _command_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(__path__)  # type: ignore[name-defined]
        if not m.name.startswith("_")
    )


class FertoolGroup(click.Group):
    """Finds sub-commands in the modules of :mod:`fertool.cli` and turns library errors
    (:class:`fertool.core.errors.FertoolError`) into clean one-line messages with exit status 1."""

    def list_commands(self, ctx):
        names = []
        for mod in _command_modules():
            cmd = self._load(mod)
            if cmd is not None:
                names.append(cmd.name)
        return sorted(names)

    def get_command(self, ctx, name):
        mod = name.replace("-", "_")
        return self._load(mod)

    @staticmethod
    def _load(mod: str):
        try:
            module = importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{mod}":
                return None
            raise
        return getattr(module, "command", None)

    def invoke(self, ctx):
        from fertool.core.errors import FertoolError

        try:
            return super().invoke(ctx)
        except FertoolError as exc:
            from fertool.cli._messages import to_flags

            name = ctx.invoked_subcommand
            command = self.get_command(ctx, name) if name else None
            raise click.ClickException(to_flags(str(exc), command)) from exc
        except KeyboardInterrupt:
            click.echo(
                "\nInterrupted; files already written are complete (atomic writes).", err=True
            )
            sys.exit(130)


@click.group(cls=FertoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="fertool")
@click.option("-v", "--verbose", count=True, help="More diagnostics (-v info, -vv debug).")
def main(verbose: int) -> None:
    """fertool: facial expression recognition with FaceNet transfer learning.

    Typical flow on a folder with one sub-folder per expression (SFEW, JAFFE, CK+, RAF-DB ...):

    \b
      fertool faces   --data DIR --out faces/          # detect, align, cache, contact sheet
      fertool compare-baselines --data DIR --out report/  # LPQ, PHOG vs FaceNet, one table
      fertool finetune --data DIR --unfreeze 9 --out runs/r1
      fertool export-onnx runs/r1 --int8
      fertool predict FOLDER --model exports/r1.onnx --out predictions.csv
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # pragma: no cover
    main()
