"""``--engine local|ray``, ``--address``, ``--num-workers``, ``--gpus-per-worker``: the options
shared by ``fertool predict`` and ``fertool embed`` (see :mod:`fertool.engines.ray_engine`).

The options are stored in the click context (not passed as parameters), so that a command takes
them with one decorator and one call: :func:`engine_runner` wraps the command's local function.
"""

from __future__ import annotations

import functools

import click

_KEY = "fertool.engine"


def _store(ctx: click.Context, param: click.Parameter, value):
    ctx.meta.setdefault(_KEY, {})[param.name] = value
    return value


def engine_options(f):
    """Add the engine options to a command."""
    opts = [
        click.option(
            "--engine",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            expose_value=False,
            callback=_store,
            help="local: this process; ray: Ray Data actor pools on a local Ray instance or "
            "the cluster at --address (pip install 'fertool[ray]').",
        ),
        click.option(
            "--address",
            default=None,
            expose_value=False,
            callback=_store,
            help="Ray cluster address (ray://HOST:10001, auto); default: a local instance "
            "sized to this machine. Only with --engine ray.",
        ),
        click.option(
            "--num-workers",
            type=click.IntRange(1),
            default=1,
            show_default=True,
            expose_value=False,
            callback=_store,
            help="With --engine ray: face-stage actors (1 CPU each) and model actors.",
        ),
        click.option(
            "--gpus-per-worker",
            type=click.FloatRange(0),
            default=0.0,
            show_default=True,
            expose_value=False,
            callback=_store,
            help="With --engine ray: GPUs per model actor (0.25 puts four on one GPU).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def engine_settings() -> dict:
    """The engine options of the running command."""
    return dict(click.get_current_context().meta.get(_KEY, {}))


def _ray_options():
    from fertool.engines.ray_engine import RayOptions

    s = engine_settings()
    return RayOptions(
        address=s.get("address"),
        num_workers=s.get("num_workers") or 1,
        gpus_per_worker=s.get("gpus_per_worker") or 0.0,
    )


def ray_options_or_none():
    """None for ``--engine local`` (a usage error when a Ray-only option is given with it);
    the :class:`~fertool.engines.ray_engine.RayOptions` for ``--engine ray``."""
    s = engine_settings()
    if s.get("engine", "local") == "local":
        if s.get("address") or (s.get("num_workers") or 1) > 1 or s.get("gpus_per_worker"):
            raise click.UsageError(
                "--address, --num-workers and --gpus-per-worker need --engine ray"
            )
        return None
    return _ray_options()


def engine_runner(local, model_path: str, providers: str = "auto", threads=None):
    """``fertool.predict.predict_paths`` for ``--engine local``; for ``--engine ray`` a function
    with its signature that runs :func:`fertool.engines.ray_engine.predict_paths_ray` on
    ``model_path`` (its ``model`` argument, already loaded here, only gives the labels)."""
    options = ray_options_or_none()
    if options is None:
        return local
    from fertool.engines.ray_engine import predict_paths_ray

    @functools.wraps(local)
    def run(inputs, model, out, **kw):
        return predict_paths_ray(
            inputs, model_path, out, options=options, providers=providers, threads=threads, **kw
        )

    return run
