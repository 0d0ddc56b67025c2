"""The agserve command: models, keys, token and demo (Flask click groups)."""
from __future__ import annotations

import getpass
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup, ScriptInfo, with_appcontext

from app.extensions import keystore, token_service
from app.values import SCOPES, parse_duration

models_cli = AppGroup("models", help="Manage the model repository.")


def init_app(app: Flask) -> None:
    for group in (models_cli, keys_cli, token_cli):
        app.cli.add_command(group)
    app.cli.add_command(demo_command)


def _repository():
    from app import model_repository
    return model_repository(current_app)


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
    """Register an existing AutoGluon predictor directory as a new model version (served once validated and
    promoted)."""
    import pandas as pd

    from app.inference import ModelError

    reference = pd.read_csv(reference_data) if reference_data else None
    try:
        imported = _repository().import_predictor(predictor_dir, name, version, reference)
    except (ModelError, ValueError) as exc:
        _fail(getattr(exc, "message", str(exc)))
    click.echo(f"imported {imported.name} version {imported.version} into {imported.path}")
    data = "" if reference_data else " --data LABELLED.csv"
    _echo_next_steps(imported.name, imported.version, data)


def _echo_next_steps(name: str, version: str, data: str) -> None:
    """Import and train only register a version: say what serves now and how this one gets served."""
    active = _repository().active_version(name)
    click.echo(f"not served yet (active version of {name}: {active or 'none'}); next: "
               f"agserve models validate {name} {version}{data} && agserve models promote {name} {version}")


@models_cli.command("background")
@click.argument("name")
@click.argument("version")
@click.option("--data", "reference_data", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with the features (and the label, for stratifying) to sample the background from.")
def background_command(name: str, version: str, reference_data: str) -> None:
    """Choose and store the background sample that explanations of NAME VERSION compare rows with."""
    import pandas as pd

    from app.inference import ModelError

    try:
        entry = _repository().set_background(name, version, pd.read_csv(reference_data))
    except (ModelError, ValueError) as exc:
        _fail(getattr(exc, "message", str(exc)))
    click.echo(f"stored a background sample of {entry['rows']} rows for {name} version {version} "
               f"(sha256 {entry['sha256'][:12]}…); workers load it when the version is next loaded "
               "(promote it, or restart)")


@models_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(as_json: bool) -> None:
    """Show every model, its versions and which one is active."""
    repository = _repository()
    default = current_app.config["DEFAULT_MODEL"] or repository.default_model()
    rows = []
    for name in repository.names():
        active = repository.active_version(name)
        for version in repository.versions(name):
            manifest = repository.get(name, version).manifest()
            rows.append({"name": name, "version": version, "active": version == active, "default": name == default,
                         "problem_type": manifest["problem_type"], "eval_metric": manifest["eval_metric"],
                         "autogluon": manifest["versions"]["autogluon"], "imported_at": manifest["imported_at"]})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no models in {repository.root}")
        return
    source = "AGSERVE_DEFAULT_MODEL" if current_app.config["DEFAULT_MODEL"] else "agserve models default NAME"
    click.echo(f"default model (POST /predict): {default or 'none'} (set with {source})")
    header = ("NAME", "VERSION", "ACTIVE", "PROBLEM", "METRIC", "AUTOGLUON", "IMPORTED")
    table = [header] + [(r["name"], r["version"], "*" if r["active"] else "", r["problem_type"], r["eval_metric"],
                         r["autogluon"], r["imported_at"]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def _minimums(values: tuple[str, ...]) -> dict[str, float]:
    minimums = {}
    for item in values:
        metric, sep, number = item.partition("=")
        try:
            minimums[metric.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep or not metric.strip():
            raise click.BadParameter(f"{item!r} is not METRIC=VALUE", param_hint="--min")
    return minimums


@models_cli.command("train")
@click.argument("data_csv", type=click.Path(exists=True, dir_okay=False))
@click.option("--label", required=True, help="Column to predict.")
@click.option("--name", required=True, help="Model name; the result becomes its next version.")
@click.option("--time-limit", type=click.IntRange(min=1), default=None, help="Seconds AutoGluon may train.")
@click.option("--presets", default="medium_quality,optimize_for_deployment", show_default=True,
              help="Comma-separated AutoGluon presets.")
@click.option("--cpus", type=click.IntRange(min=1), default=None, help="Cores training may use.")
@click.option("--memory-limit", type=click.FloatRange(min=0.1), default=None, help="GB of memory training may use.")
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="Share of rows kept out of training for validation and the manifest.")
@click.option("--infer-limit-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Per-row inference budget AutoGluon must meet when choosing models (infer_limit).")
@click.option("--hyperparameters", default=None, help="AutoGluon hyperparameters as JSON (default: installed families).")
@click.option("--problem-type", type=click.Choice(["binary", "multiclass", "regression", "quantile"]), default=None)
@click.option("--eval-metric", default=None, help="AutoGluon eval metric (default: AutoGluon's choice).")
def train_command(data_csv, label, name, time_limit, presets, cpus, memory_limit, holdout, infer_limit_ms,
                  hyperparameters, problem_type, eval_metric) -> None:
    """Train a predictor for deployment, compress it, and register it as a new version."""
    import pandas as pd

    from app.lifecycle.training import train

    try:
        parsed = json.loads(hyperparameters) if hyperparameters else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--hyperparameters") from None
    result = train(_repository(), pd.read_csv(data_csv), label=label, name=name, holdout=holdout,
                   time_limit=time_limit, presets=tuple(p.strip() for p in presets.split(",") if p.strip()),
                   cpus=cpus, memory_limit_gb=memory_limit, infer_limit_ms=infer_limit_ms, hyperparameters=parsed,
                   problem_type=problem_type, eval_metric=eval_metric, report=click.echo)
    version = result.version
    click.echo(f"registered {version.name} version {version.version} (best model {result.model_best}); "
               f"holdout scores: {json.dumps(result.scores)}")
    _echo_next_steps(version.name, version.version, "")


@models_cli.command("validate")
@click.argument("name")
@click.argument("version")
@click.option("--data", "data_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Labelled rows to validate on (default: the holdout saved by train).")
@click.option("--min", "minimums", multiple=True, metavar="METRIC=VALUE",
              help="Lowest acceptable score (AutoGluon scores: higher is better, losses negative). Repeatable.")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Budget for the median single-row latency.")
def validate_command(name, version, data_csv, minimums, max_latency_ms) -> None:
    """The gate: load, checksums, scores, stability and latency; writes validation.json, exits 1 on failure."""
    import pandas as pd

    from app.inference import ModelError
    from app.lifecycle.training import HOLDOUT_FILE
    from app.lifecycle.validation import validate

    try:
        target = _repository().get(name, version)
    except ModelError as exc:
        _fail(exc.message)
    path = data_csv or target.path / HOLDOUT_FILE
    if not Path(path).is_file():
        _fail(f"no data to validate on: pass --data (there is no {path})")
    report = validate(target, pd.read_csv(path), current_app.config, _minimums(minimums), max_latency_ms)
    click.echo(report.table())
    sys.exit(0 if report.passed else 1)


@models_cli.command("default")
@click.argument("name", required=False)
def default_command(name: str | None) -> None:
    """Show the default model (answered by POST /predict), or make NAME the default."""
    from app.inference import ModelError

    repository = _repository()
    if name is None:
        configured = current_app.config["DEFAULT_MODEL"]
        click.echo(f"{configured} (AGSERVE_DEFAULT_MODEL)" if configured else repository.default_model() or "none")
        return
    previous = repository.default_model()
    try:
        repository.set_default_model(name)
    except ModelError as exc:
        _fail(exc.message)
    keystore().audit(_cli_actor(), "model.default", name, "cli", {"previous": previous})
    click.echo(f"default model: {name} (was {previous or 'none'}); servers follow within seconds"
               + (" (AGSERVE_DEFAULT_MODEL overrides it)" if current_app.config["DEFAULT_MODEL"] else ""))


@models_cli.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--force", is_flag=True, help="Promote without a passing validation (audited).")
def promote_command(name: str, version: str, force: bool) -> None:
    """Make VERSION the active version of NAME; servers switch to it within seconds."""
    from app.inference import ModelError
    from app.lifecycle.versions import promote

    try:
        result = promote(_repository(), name, version, force)
    except ModelError as exc:
        _fail(exc.message)
    keystore().audit(_cli_actor(), "model.promote", f"{name}/{version}", "cli", result)
    click.echo(f"{name}: active version {result['active']} (was {result['previous'] or 'none'})"
               + (" [forced, audited]" if force else ""))


@models_cli.command("rollback")
@click.argument("name")
def rollback_command(name: str) -> None:
    """Return NAME to the version that was active before the current one."""
    from app.inference import ModelError
    from app.lifecycle.versions import rollback

    try:
        result = rollback(_repository(), name)
    except ModelError as exc:
        _fail(exc.message)
    keystore().audit(_cli_actor(), "model.rollback", f"{name}/{result['active']}", "cli", result)
    click.echo(f"{name}: active version {result['active']} (was {result['previous'] or 'none'})")


keys_cli = AppGroup("keys", help="Manage API keys.")
SCOPES_HELP = f"Comma-separated: {', '.join(SCOPES)}."
token_cli = AppGroup("token", help="Issue JWTs (needs AGSERVE_JWT_SECRET or an HS256 key).")


def _cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


def _scopes(text: str) -> list[str]:
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise click.BadParameter(f"scopes are a comma-separated list of {', '.join(SCOPES)}")
    return scopes


def _duration(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@keys_cli.command("create")
@click.option("--owner", required=True, help="Who the key is for.")
@click.option("--scopes", required=True, help=SCOPES_HELP)
@click.option("--expires", default=None, help="Lifetime such as 30d or 12h (default: no expiry).")
def keys_create(owner: str, scopes: str, expires: str | None) -> None:
    """Create an API key and print it (it is shown only this once)."""
    lifetime = _duration(expires)
    key, record = keystore().create(owner, _scopes(scopes), time.time() + lifetime if lifetime else None)
    keystore().audit(_cli_actor(), "key.create", record.id, "cli", {"owner": owner, "scopes": list(record.scopes)})
    click.echo(f"created key {record.id} for {owner} with scopes {','.join(record.scopes)}")
    click.echo(key)


@keys_cli.command("list")
def keys_list() -> None:
    """List API keys (never their secrets)."""
    records = [r.public() for r in keystore().list()]
    click.echo(json.dumps(records, indent=2))


@keys_cli.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key; every worker refuses it from the next request on."""
    record = keystore().revoke(key_id)
    if record is None:
        _fail(f"no API key {key_id!r}")
    keystore().audit(_cli_actor(), "key.revoke", key_id, "cli")
    click.echo(f"revoked {key_id}")


@token_cli.command("issue")
@click.option("--sub", required=True, help="Subject (who the token is for).")
@click.option("--scopes", required=True, help=SCOPES_HELP)
@click.option("--ttl", default="15m", show_default=True, help="Lifetime (capped by AGSERVE_JWT_MAX_TTL).")
def token_issue(sub: str, scopes: str, ttl: str) -> None:
    """Issue a signed HS256 JWT and print it (the server must run with the same AGSERVE_JWT_SECRET)."""
    try:
        token, _ = token_service().issue(sub, _scopes(scopes), _duration(ttl))
    except LookupError:
        _fail("token issuing needs AGSERVE_JWT_SECRET (or an HS256 key in AGSERVE_JWT_JWKS_FILE)")
    keystore().audit(_cli_actor(), "token.issue", sub, "cli", {"scopes": _scopes(scopes)})
    click.echo(token)


@click.command("demo")
@click.option("--bind", default="127.0.0.1:8000", help="Address used in the printed curl command.")
@with_appcontext
def demo_command(bind: str) -> None:
    """First-run set-up: train, import, validate and promote the iris demo model, create an admin key if none
    exists, print a curl."""
    from app.demo import DEMO_NAME, train_demo
    from app.lifecycle.validation import validate
    from app.lifecycle.versions import promote

    repository = _repository()
    if repository.active_version(DEMO_NAME) is None:
        click.echo("training the iris demo model (a few seconds)...")
        with tempfile.TemporaryDirectory() as workdir:
            predictor_dir, holdout = train_demo(Path(workdir))
            imported = repository.import_predictor(predictor_dir, DEMO_NAME, reference=holdout)
        # The demo goes through the same gate as every model: validated on its holdout, then promoted.
        report = validate(imported, holdout, current_app.config)
        if not report.passed:
            _fail(f"the demo model failed validation:\n{report.table()}")
        promote(repository, DEMO_NAME, imported.version)
        click.echo(f"imported, validated and promoted {imported.name} version {imported.version}")
    if repository.default_model() is None and repository.names() == [DEMO_NAME]:
        repository.set_default_model(DEMO_NAME)  # a repository from before defaults were recorded
    key = "$AGSERVE_KEY"
    if keystore().active_count() == 0:
        key, record = keystore().create("make-run", ["admin", "explain", "metrics", "model_info", "predict"])
        keystore().audit(_cli_actor(), "key.create", record.id, "cli", {"owner": "make-run", "first_run": True})
        click.echo(f"created the first API key (every scope); it is shown only now:\n  {key}")
    else:
        click.echo("API keys exist already: set AGSERVE_KEY to one of yours; lost it? create one with every scope:\n"
                   "  .venv/bin/agserve keys create --owner me --scopes predict,explain,model_info,admin,metrics")
    sample = repository.get(DEMO_NAME).manifest()["reference"]["sample_row"]
    body = json.dumps({"data": [sample]})
    host = bind.replace("0.0.0.0", "127.0.0.1")
    default = current_app.config["DEFAULT_MODEL"] or repository.default_model()
    route = "/predict" if default == DEMO_NAME else f"/models/{DEMO_NAME}/predict"
    click.echo("when the server is ready, try:")
    click.echo(f"  curl -s http://{host}{route} -H \"X-API-Key: {key}\" -H 'Content-Type: application/json' "
               f"-d {shlex.quote(body)}")


@click.command("loadtest")
@click.argument("url")
@click.option("--concurrency", "-c", type=int, default=8, show_default=True, help="Requests in flight at once.")
@click.option("--duration", "-d", type=float, help="Seconds to run (or --requests).")
@click.option("--requests", "-n", "requests_total", type=int, help="Requests to send (or --duration).")
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON body to POST on every request (without it: GET).")
@click.option("--key", envvar="AGSERVE_KEY", help="API key to send as X-API-Key (default: $AGSERVE_KEY).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the report as JSON here.")
@click.option("--allow-remote", is_flag=True, help="Allow a target that is not a loopback address.")
def loadtest_command(url, concurrency, duration, requests_total, data_file, key, json_out, allow_remote) -> None:
    """Load URL and report throughput, failures by status and latency percentiles."""
    from app.loadtest import LoadTestError, run

    body = Path(data_file).read_bytes() if data_file else None
    headers = {"X-API-Key": key} if key else {}

    def progress(done: int, failed: int, seconds: float) -> None:
        click.echo(f"[{seconds:5.1f} s] {done} requests, {failed} failed", err=True)

    try:
        report = run(url, concurrency=concurrency, duration=duration, requests_total=requests_total, body=body,
                     headers=headers, progress=progress, allow_remote=allow_remote)
    except LoadTestError as exc:
        click.echo(f"agserve: {exc}", err=True)
        sys.exit(2)
    click.echo(report.text())
    if json_out:
        Path(json_out).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    sys.exit(0 if report.successes == report.total else 1)


def _cli_app() -> Flask:
    from app import create_app
    return create_app({"LOAD_MODELS_ON_START": False})


@click.group()
def cli() -> None:
    """agserve: serve AutoGluon tabular models (settings: AGSERVE_* variables, see README)."""


for command in (models_cli, keys_cli, token_cli, demo_command, loadtest_command):
    cli.add_command(command)


def main() -> None:
    from app.config import ConfigError

    try:
        cli.main(prog_name="agserve", obj=ScriptInfo(create_app=_cli_app, set_debug_flag=False))
    except ConfigError as exc:
        click.echo(f"agserve: configuration error: {exc}", err=True)
        sys.exit(2)
