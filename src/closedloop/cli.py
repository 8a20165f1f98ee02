"""`closedloop`: the one command line in front of the library.

The Make targets and the workflows call it, so every step with logic is tested here. Each
command imports what it needs only when it runs: `closedloop rollback --help` starts in a
fraction of the time it takes to import pandas or torch (`make bench` measures it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from closedloop.errors import ClosedloopError

REGISTRY = Path("models/registry.yaml")  # closedloop.paths.REGISTRY, without importing it
GATE_SCHEMA = Path("schemas/gate.schema.json")  # closedloop.paths.GATE_SCHEMA


class _Group(click.Group):
    """Turns a ClosedloopError anywhere below into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ClosedloopError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)


# Options several commands share, declared once.
DATA_DIR = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True
)
STORE_URL = click.option(
    "--store-url",
    envvar="CLOSEDLOOP_STORE_URL",
    show_envvar=True,
    help="the feedback store [default: serve.store_url]",
)
PARAMS = click.option(
    "--params", type=click.Path(path_type=Path), default=Path("params.yaml"), show_default=True
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="closedloop")
def cli() -> None:
    """closedloop: capture production feedback, retrain, judge, promote by review."""


# ------------------------------------------------------------------------ capture
@cli.command()
@click.option("--host", envvar="CLOSEDLOOP_HOST", help="listen address [default: serve.host]")
@click.option(
    "--port",
    envvar="CLOSEDLOOP_PORT",
    type=click.IntRange(1, 65535),
    help="listen port [default: serve.port]",
)
@click.option("--store-url", help="the feedback store [default: serve.store_url]")
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    help="serve this model directory (under a rollout: the champion)",
)
@click.option("--no-logging", is_flag=True, help="store nothing (the benchmark's baseline)")
@click.option(
    "--candidate-dir",
    type=click.Path(path_type=Path),
    help="with rollout.mode shadow or canary: the candidate to try [default: models/candidate]",
)
def serve(host, port, store_url, model_dir, no_logging, candidate_dir) -> None:
    """The reference prediction server: POST /predict, POST /feedback, GET /healthz."""
    from closedloop.serving.server import run_server

    run_server(host, port, store_url, model_dir, no_logging, candidate_dir)


@cli.command()
@click.option(
    "--url",
    help="the server [default: http://$CLOSEDLOOP_HOST:$CLOSEDLOOP_PORT (make's HOST= and "
    "PORT=), else 127.0.0.1 and serve.port]",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=200.0,
    show_default=True,
    help="requests per second (0: no cap)",
)
@click.option(
    "--limit", type=click.IntRange(min=0), help="predictions to send [default: each row once]"
)
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--feedback-coverage",
    type=click.FloatRange(0, 1),
    default=0.9,
    show_default=True,
    help="share of predictions that get feedback (0.9: the newest 120 days hold the 100 "
    "labelled rows a production window needs)",
)
@click.option(
    "--feedback-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="seconds before feedback arrives",
)
@click.option("--start", help="first event date to replay (YYYY-MM-DD)")
@click.option("--end", help="last event date to replay (YYYY-MM-DD)")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="which predictions get feedback"
)
@click.option("--max-seconds", type=click.FloatRange(min=0), default=600.0, show_default=True)
@click.option("--max-errors", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--snapshot",
    type=click.Path(path_type=Path),
    default=Path("artifacts/snapshot"),
    show_default=True,
    help="collect's snapshot",
)
@click.option(
    "--token",
    envvar="CLOSEDLOOP_API_TOKEN",
    show_envvar=True,
    help="bearer token, when the server requires one",
)
def simulate(
    url,
    rate,
    limit,
    concurrency,
    feedback_coverage,
    feedback_delay,
    start,
    end,
    seed,
    max_seconds,
    max_errors,
    snapshot,
    token,
) -> None:
    """Replay the production period through a running server, with delayed feedback."""
    import asyncio

    from closedloop.serving.simulate import production_rows, replay

    rows = production_rows(snapshot, start, end)
    url = url or _server_url()
    summary = asyncio.run(
        replay(
            url,
            rows,
            limit=limit,
            concurrency=concurrency,
            rate=rate,
            feedback_coverage=feedback_coverage,
            feedback_delay=feedback_delay,
            seed=seed,
            max_seconds=max_seconds,
            max_errors=max_errors,
            token=token,
        )
    )
    click.echo(summary.line())
    if summary.errors:
        sys.exit(1)


def _server_url() -> str:
    """Where `make serve` listens: HOST= and PORT= (through the environment), else serve.port."""
    import os

    host = os.environ.get("CLOSEDLOOP_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    port = os.environ.get("CLOSEDLOOP_PORT")
    if not port:
        from closedloop.config import load_params

        port = load_params()["serve"]["port"] if Path("params.yaml").exists() else 8000
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


@cli.command()
@STORE_URL
@DATA_DIR
@click.option("--no-dvc", is_flag=True, help="do not run `dvc add` afterwards")
def export(store_url, data_dir, no_dvc) -> None:
    """Move new records from the feedback store into data/feedback/, then `dvc add data`."""
    from closedloop.capture.export import dvc_add
    from closedloop.capture.export import export as run_export
    from closedloop.config import load_params

    url = store_url or load_params()["serve"]["store_url"]
    moved = run_export(url, data_dir)  # a StoreError names the store (never its password)
    if not no_dvc:
        dvc_add(data_dir)
    if not moved["predictions"] and not moved["feedback"]:
        click.echo(f"export: nothing new in the store since the last export into {data_dir}/")
        return
    click.echo(
        f"export: {moved['predictions']} predictions, {moved['feedback']} feedback -> "
        f"{data_dir}/feedback/" + ("" if no_dvc else " (data.dvc updated)")
    )


@cli.command("reset-capture")
@STORE_URL
@DATA_DIR
def reset_capture(store_url, data_dir) -> None:
    """Start capture again: remove the local SQLite store and data/feedback/ (stop servers first).

    data/feedback/ holds the exported partitions and the export watermark; `dvc add data`
    then updates data.dvc. Nothing tracked by git is removed.
    """
    from closedloop.capture.export import reset
    from closedloop.config import load_params

    url = store_url or load_params()["serve"]["store_url"]
    removed = reset(url, data_dir)
    if not removed:
        click.echo("reset-capture: nothing to remove: no local store and no exported feedback")
        return
    click.echo(f"reset-capture: removed {', '.join(removed)}; data.dvc updated")


# ----------------------------------------------------------------------- registry
@cli.command()
@click.option(
    "--version", "version", help="version to register [default: next minor, v1.0.0 first]"
)
@click.option(
    "--change",
    envvar="CLOSEDLOOP_CHANGE",
    show_envvar=True,
    default="local",
    show_default=True,
    help='what brought it, e.g. "PR #12"',
)
@click.option("--registry", type=click.Path(path_type=Path), default=REGISTRY, show_default=True)
@click.option("--body-out", type=click.Path(path_type=Path), help="write a pull-request body here")
@click.option("--if-new", is_flag=True, help="exit 0 without a change when already registered")
def promote(version, change, registry, body_out, if_new) -> None:
    """Record the candidate as production, if reports/gate.json passed for its exact hash."""
    from closedloop.io import write_text
    from closedloop.registry.promote import promote as run_promote
    from closedloop.registry.promote import registered_as
    from closedloop.registry.registry import describe

    if if_new and (known := registered_as(registry)):
        click.echo(f"promote: the candidate is already registered as {known}; nothing to promote")
        return
    _, entry, previous = run_promote(registry=registry, version=version, change=change)
    if body_out:
        write_text(body_out, describe(entry, previous, "promote"))
    was = f"; it replaces {previous}" if previous else "; it is the first production model"
    click.echo(
        f"promote: {entry['version']} (sha256 {entry['model_hash'][:12]}, commit "
        f"{entry['commit'][:12]}) is production in {registry}{was}"
    )


@cli.command()
@click.option(
    "--to",
    envvar="CLOSEDLOOP_ROLLBACK_TO",
    show_envvar=True,
    help="version to restore [default: the previous production one]",
)
@click.option(
    "--change",
    envvar="CLOSEDLOOP_CHANGE",
    show_envvar=True,
    default="local",
    show_default=True,
    help="why: a PR or an incident",
)
@click.option("--registry", type=click.Path(path_type=Path), default=REGISTRY, show_default=True)
@click.option("--body-out", type=click.Path(path_type=Path), help="write a pull-request body here")
def rollback(to, change, registry, body_out) -> None:
    """Make an earlier registry entry production again (the previous one by default)."""
    from closedloop.io import write_text
    from closedloop.registry.registry import describe
    from closedloop.registry.rollback import rollback as run_rollback

    _, entry, replaced = run_rollback(registry, to or None, change)
    if body_out:
        write_text(body_out, describe(entry, replaced, "rollback"))
    click.echo(f"rollback: {entry['version']} is production in {registry}; was {replaced}")


@cli.command("lock-check")
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    help="when it did not, open this report (reports/benchmark.md) with a note saying so",
)
def lock_check(report) -> None:
    """Exit non-zero unless `dvc repro` here reproduced the committed dvc.lock."""
    from closedloop.registry.lock import check

    differences = check(report=report)
    if not differences:
        click.echo("lock-check: this run reproduced the committed dvc.lock")
        return
    click.echo(
        "lock-check: this run did NOT reproduce the committed dvc.lock; the model it judged is "
        "not the one the commit records: " + "; ".join(differences),
        err=True,
    )
    sys.exit(1)


@cli.group()
def deploy() -> None:
    """Deploy what models/registry.yaml names as production (deploy.yml runs these)."""


@deploy.command("verify")
@click.option("--registry", type=click.Path(path_type=Path), default=REGISTRY, show_default=True)
def deploy_verify(registry) -> None:
    """Check the production entry: gate pass, and weights that resolve to its hash."""
    from closedloop.registry.deploy import verify

    entry = verify(registry)
    click.echo(
        f"deploy: {entry['version']} verified (gate pass, sha256 {entry['model_hash'][:12]})"
    )


@deploy.command("tag")
@click.option("--registry", type=click.Path(path_type=Path), default=REGISTRY, show_default=True)
@click.option("--push", is_flag=True, help="push the new tags to origin")
def deploy_tag(registry, push) -> None:
    """Tag the production entry in GTO's format: <model>@vX.Y.Z and <model>#prod#N."""
    from closedloop.registry.deploy import tag

    click.echo("deploy: tagged " + ", ".join(tag(registry, push)))


@deploy.command("hook")
@click.option("--registry", type=click.Path(path_type=Path), default=REGISTRY, show_default=True)
def deploy_hook(registry) -> None:
    """Run deploy/hook.sh with the verified production model."""
    from closedloop.registry.deploy import hook

    hook(registry)


# ------------------------------------------------------------------------ judging
@cli.group()
def gate() -> None:
    """The gate verdict in reports/gate.json."""


@gate.command("check")
@click.option(
    "--path", type=click.Path(path_type=Path), default=Path("reports/gate.json"), show_default=True
)
def gate_check(path) -> None:
    """Exit non-zero unless the recorded verdict is pass (the required check in CI)."""
    from closedloop.gating.gate import check_verdict

    sys.exit(check_verdict(path))


@gate.command("schema")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=GATE_SCHEMA,
    show_default=True,
    help="where to write it; '-' prints it",
)
def gate_schema(out) -> None:
    """Write the JSON Schema of reports/gate.json, generated from its declared shape."""
    from closedloop.artefacts.gate import json_schema
    from closedloop.io import write_text

    if str(out) == "-":
        click.echo(json_schema(), nl=False)
        return
    write_text(out, json_schema())
    click.echo(f"gate schema: {out}")


@cli.group()
def errors() -> None:
    """The candidate's mistakes on the production window (reports/errors.parquet)."""


@errors.command("show")
@click.option("--type", "failure_type", help="TRUE->PREDICTED, e.g. rain->sun")
@click.option("--since", help="first date, YYYY-MM-DD")
@click.option("--until", help="last date, YYYY-MM-DD")
@click.option(
    "--min-impact",
    type=float,
    default=0.0,
    show_default=True,
    help="minimum confidence of the wrong answer (regression: absolute residual)",
)
@click.option("--slice", "slice_filter", help="NAME=VALUE, e.g. season=winter")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def errors_show(failure_type, since, until, min_impact, slice_filter, limit) -> None:
    """Filter the error table by failure type, time, impact and slice."""
    from closedloop.evaluation.error_analysis import query, read_errors

    table = read_errors()
    found = query(table, failure_type, since, until, min_impact, slice_filter)
    if table.empty:
        click.echo("No mispredictions: the candidate got every row of the production window right.")
        return
    if found.empty:
        click.echo("No mispredictions match these filters.")
        return
    click.echo(found.head(limit).to_string(index=False))
    click.echo(f"{len(found)} matching error(s)")


# -------------------------------------------------------------------- experiments
@cli.group()
def exp() -> None:
    """DVC experiments: run one with its overrides checked first, and save one into conf/."""


@exp.command("run", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("-S", "--set-param", "overrides", multiple=True, help="a Hydra override")
@click.pass_context
def exp_run(ctx, overrides) -> None:
    """`dvc exp run` with its -S overrides checked first: a typo costs one line, not DVC's
    five-line "unexpected error". Every other argument goes to `dvc exp run` as given."""
    import os
    import shutil

    from closedloop.config import compose

    compose(list(overrides))  # a bad override: one line naming it (ConfigError), exit 2
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    args = [a for o in overrides for a in ("-S", o)] + ctx.args
    os.execv(dvc, [dvc, "exp", "run", *args])


@exp.command("save")
@click.argument("name")
@click.option(
    "--params",
    type=click.Path(path_type=Path),
    default=Path("params.yaml"),
    show_default=True,
    help="the experiment's params (after `dvc exp apply NAME`)",
)
def exp_save(name, params) -> None:
    """Write params.yaml's difference from conf/ into conf/experiment/NAME.yaml and select it.

    After `dvc exp run -S ...` or `dvc exp apply NAME`, `dvc repro` refuses to recompose
    conf/ over the experiment; this makes conf/ compose to it, so the next `dvc repro` keeps it.
    """
    from closedloop.config import compose, load_params
    from closedloop.config.experiments import save
    from closedloop.paths import CONF_DIR

    path, groups, keys = save(
        name, load_params(params), CONF_DIR, lambda overrides: compose(overrides, CONF_DIR)
    )
    what = [f"group choice(s) {', '.join(groups)}"] if groups else []
    what += [f"{len(keys)} key(s): {', '.join(keys)}"] if keys else []
    click.echo(
        f"exp save: {path} holds {' and '.join(what) or 'nothing (params.yaml is conf/)'}; "
        f"conf/config.yaml selects it (`- experiment: {name}`); `dvc repro` keeps it now"
    )


# ---------------------------------------------------------------------- online
@cli.group()
def rollout() -> None:
    """Shadow and canary rollouts of the candidate (conf/rollout/, reports/rollout.*)."""


@rollout.command("decide")
@DATA_DIR
@click.option(
    "--records",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a Parquet table of per-request records instead of --data-dir's exports",
)
@PARAMS
@click.option("--apply", "do_apply", is_flag=True, help="write the next step into conf/rollout/")
@click.option("--no-dvc", is_flag=True, help="with --apply: skip `dvc repro compose` afterwards")
@click.option(
    "--outputs-file",
    type=click.Path(path_type=Path),
    help="append outcome=, action= and changed= lines here (GitHub's $GITHUB_OUTPUT)",
)
def rollout_decide(data_dir, records, params, do_apply, no_dvc, outputs_file) -> None:
    """Judge the current rollout step: ramp, roll back, or hold and ask a person."""
    import pandas as pd

    from closedloop.config import load_params
    from closedloop.paths import ROLLOUT_MD
    from closedloop.rollout.apply import apply, recompose
    from closedloop.rollout.decide import decide
    from closedloop.rollout.records import from_frames, read_records
    from closedloop.rollout.report import write

    cfg = load_params(params)["rollout"]
    loaded = from_frames(pd.read_parquet(records)) if records else read_records(data_dir)
    report = decide(loaded.frame, cfg, loaded.counts)
    write(report)
    changed = apply(report, cfg["name"]) if do_apply else None
    if changed is not None and not no_dvc:
        recompose()
    if outputs_file:
        with open(outputs_file, "a", encoding="utf-8") as f:
            f.write(f"outcome={report.outcome or 'none'}\naction={report.action}\n")
            f.write(f"changed={'true' if changed else 'false'}\n")
    head = (report.outcome or "no rollout").upper()
    edit = f"; {changed} updated" if changed else ""
    click.echo(f"rollout: {head}, {report.action}: {report.reason} ({ROLLOUT_MD}{edit})")


@cli.command()
@DATA_DIR
@click.option(
    "--store-url",
    envvar="CLOSEDLOOP_STORE_URL",
    show_envvar=True,
    help="read the feedback store itself instead of --data-dir's exports",
)
@PARAMS
@click.option(
    "--alerts-out",
    type=click.Path(path_type=Path),
    help="write the alert rules' results here, e.g. reports/alerts.json (monitor.yml opens one issue per failing rule)",
)
@click.option(
    "--workspace",
    type=click.Path(path_type=Path),
    help="also store each window's drift snapshot in this Evidently Workspace",
)
def monitor(data_dir, store_url, params, alerts_out, workspace) -> None:
    """The monitoring page (reports/monitor.html) and its numbers (reports/monitor.json)."""
    from closedloop.config import load_params
    from closedloop.monitoring.monitor import monitor as run_monitor
    from closedloop.paths import MONITOR_HTML

    report = run_monitor(
        load_params(params),
        data_dir=data_dir,
        store_url=store_url,
        alerts_out=alerts_out,
        workspace=workspace,
    )
    failing = [a["rule"] for a in report.alerts if a["failing"]]
    alarm = f"; failing: {', '.join(failing)}" if failing else "; no rule fails"
    click.echo(
        f"monitor: {report.totals['requests']} predictions in {report.totals['windows']} "
        f"{report.window} windows -> {MONITOR_HTML}{alarm}"
    )


@cli.command()
def demo() -> None:
    """The whole story offline, in a scratch clone under .demo/ (make demo)."""
    from closedloop.demo import run_demo

    run_demo()


def main() -> None:
    cli(prog_name="closedloop")
