"""`fertool info`: versions, devices and where weights and caches are found."""

from __future__ import annotations

import click


@click.command("info")
def command() -> None:
    """Show versions, compute devices, cache folders and weight files."""
    import platform

    from fertool.core.env import environment_info
    from fertool.core.version import __version__

    click.echo(f"fertool {__version__} on Python {platform.python_version()}")
    for key, value in environment_info().items():
        click.echo(f"  {key}: {value}")
