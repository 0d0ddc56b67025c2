"""The agserve command: `agserve models import|list|demo` (Flask click groups)."""
from __future__ import annotations

import json
import shlex
import sys
import tempfile
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup, ScriptInfo

models_cli = AppGroup("models", help="Manage the model repository.")


def init_app(app: Flask) -> None:
    app.cli.add_command(models_cli)


def _repository():
    from app.inference import ModelRepository
    return ModelRepository(current_app.config["MODEL_REPOSITORY"])


def _fail(message: str) -> None:
    click.echo(f"agserve: {message}", err=True)
    sys.exit(1)


@models_cli.command("import")
@click.argument("predictor_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--name", required=True, help="Model name in the repository.")
@click.option("--version", "version", default=None, help="Version label (default: next number).")
@click.option("--reference-data", type=click.Path(exists=True, dir_okay=False),
              help="CSV with the features (and the label) used for statistics, scores and feature importance.")
def import_command(predictor_dir: str, name: str, version: str | None, reference_data: str | None) -> None:
    """Register an existing AutoGluon predictor directory as a new model version."""
    import pandas as pd

    from app.inference import ModelError

    reference = pd.read_csv(reference_data) if reference_data else None
    try:
        imported = _repository().import_predictor(predictor_dir, name, version, reference)
    except (ModelError, ValueError) as exc:
        _fail(getattr(exc, "message", str(exc)))
    active = _repository().active_version(name)
    click.echo(f"imported {imported.name} version {imported.version} into {imported.path}"
               f" (active version: {active})")


@models_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(as_json: bool) -> None:
    """Show every model, its versions and which one is active."""
    repository = _repository()
    rows = []
    for name in repository.names():
        active = repository.active_version(name)
        for version in repository.versions(name):
            manifest = repository.get(name, version).manifest()
            rows.append({"name": name, "version": version, "active": version == active,
                         "problem_type": manifest["problem_type"], "eval_metric": manifest["eval_metric"],
                         "autogluon": manifest["versions"]["autogluon"], "imported_at": manifest["imported_at"]})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no models in {repository.root}")
        return
    header = ("NAME", "VERSION", "ACTIVE", "PROBLEM", "METRIC", "AUTOGLUON", "IMPORTED")
    table = [header] + [(r["name"], r["version"], "*" if r["active"] else "", r["problem_type"], r["eval_metric"],
                         r["autogluon"], r["imported_at"]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


@models_cli.command("demo")
@click.option("--bind", default="127.0.0.1:8000", help="Address used in the printed curl command.")
def demo_command(bind: str) -> None:
    """Train and import the iris demo model unless the repository already has it; print a curl command."""
    from app.demo import DEMO_NAME, train_demo

    repository = _repository()
    if repository.active_version(DEMO_NAME) is None:
        click.echo("training the iris demo model (a few seconds)...")
        with tempfile.TemporaryDirectory() as workdir:
            predictor_dir, holdout = train_demo(Path(workdir))
            imported = repository.import_predictor(predictor_dir, DEMO_NAME, reference=holdout)
        click.echo(f"imported {imported.name} version {imported.version}")
    sample = repository.get(DEMO_NAME).manifest()["reference"]["sample_row"]
    body = json.dumps({"data": [sample]})
    host = bind.replace("0.0.0.0", "127.0.0.1")
    click.echo("when the server is ready, try:")
    click.echo(f"  curl -s http://{host}/predict -H 'Content-Type: application/json' -d {shlex.quote(body)}")


def _cli_app() -> Flask:
    from app import create_app
    return create_app({"LOAD_MODELS_ON_START": False})


@click.group()
def cli() -> None:
    """agserve: serve AutoGluon tabular models (settings: AGSERVE_* variables, see README)."""


cli.add_command(models_cli)


def main() -> None:
    from app.config import ConfigError

    try:
        cli.main(prog_name="agserve", obj=ScriptInfo(create_app=_cli_app, set_debug_flag=False))
    except ConfigError as exc:
        click.echo(f"agserve: configuration error: {exc}", err=True)
        sys.exit(2)
