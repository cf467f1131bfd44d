"""The ``vulnattest`` command line: the outermost layer, the only one that configures logging or exits."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from vulnattest.config import FleetConfig, format_duration, load_config, parse_duration
from vulnattest.errors import VulnattestError
from vulnattest.images import ImageRef
from vulnattest.outcomes import ImageOutcome

# vulnattest's own log lines reach the Prefect UI beside the flows' (read when Prefect is first imported, which the
# command line does after this); a deployment's job variables set the same for workers
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "vulnattest")
# the commands that run flows: Prefect's console handler shows vulnattest's log lines there
_PREFECT_COMMANDS = frozenset({"run", "check", "serve", "demo"})

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

    from vulnattest.freshness import ImageVerdict
    from vulnattest.kyverno import PolicyRequirements
    from vulnattest.signing.interface import Verifier

app = typer.Typer(
    help="Keep a fresh, signed vulnerability scan attached to every container image of a fleet.",
    no_args_is_help=True, pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Create and convert signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
errors = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="fleet configuration file (YAML)", exists=True,
                                            dir_okay=False, readable=True)]


@app.callback()
def _options(
    ctx: typer.Context,
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True,
        help="show vulnattest's own log lines: -v from info, -vv from debug (warnings always show)")] = 0,
) -> None:
    """Keep a fresh, signed vulnerability scan attached to every container image of a fleet."""
    logger = logging.getLogger("vulnattest")
    if verbose:  # else as logging is configured: warnings and worse
        logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    if ctx.invoked_subcommand not in _PREFECT_COMMANDS and not logger.handlers:
        from rich.logging import RichHandler

        logger.addHandler(RichHandler(console=errors, show_path=False, show_time=verbose > 1))


class PolicyKind(StrEnum):
    """Which generation of Kyverno policy to write."""

    cluster_policy = "ClusterPolicy"
    image_validating_policy = "ImageValidatingPolicy"


class Layout(StrEnum):
    """Where attestations are attached (the config's ``attach``)."""

    legacy = "legacy"
    bundle = "bundle"
    both = "both"


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@keys_app.command("generate")
def keys_generate(
    directory: Annotated[Path, typer.Argument(help="where to write vulnattest.key and vulnattest.pub")],
    no_password: Annotated[bool, typer.Option("--no-password", help="write the private key unencrypted: anyone "
                                              "who can read the file can sign as you")] = False,
) -> None:
    """Write a new ECDSA P-256 key pair, the private key encrypted.

    The password comes from VULNATTEST_KEY_PASSWORD, else it is asked for (twice) on a terminal; without either,
    `--no-password` must say that an unencrypted key is meant.
    """
    from vulnattest.signing.keyfile import generate_keypair, key_password

    password = key_password()
    if password is None and not no_password:
        if not sys.stdin.isatty():
            raise _fail("no password for the new key: set VULNATTEST_KEY_PASSWORD (the signer reads it too), or pass "
                        "--no-password to write an unencrypted key")
        password = typer.prompt("password for the new key", hide_input=True, confirmation_prompt=True).encode()
    try:
        private, public = generate_keypair(directory, password or None)
    except VulnattestError as e:
        raise _fail(str(e)) from None
    state = "encrypted; the signer reads its password from VULNATTEST_KEY_PASSWORD" if password else (
        "UNENCRYPTED: anyone who can read it can sign")
    console.print(f"private key: {private} ({state}; keep it secret)\n"
                  f"public key:  {public} (give it to verifiers and Kyverno)")


@keys_app.command("import")
def keys_import(
    cosign_key: Annotated[Path, typer.Argument(help="a cosign.key (ENCRYPTED SIGSTORE PRIVATE KEY)", exists=True,
                                               dir_okay=False, readable=True)],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="where to write vulnattest.key/.pub")] = Path(),
) -> None:
    """Convert a cosign key into vulnattest.key and vulnattest.pub.

    Decrypts with COSIGN_PASSWORD (empty when unset, as cosign allows); encrypts the result with
    VULNATTEST_KEY_PASSWORD (or COSIGN_PASSWORD). vulnattest also signs with a cosign.key directly.
    """
    from vulnattest.signing.keyfile import import_cosign_key, key_password

    password = key_password()
    source_password = os.environ.get("COSIGN_PASSWORD", "").encode()  # never the output's: that one may be new
    try:
        private, public = import_cosign_key(cosign_key, output_dir, source_password=source_password, password=password)
    except VulnattestError as e:
        raise _fail(str(e)) from None
    console.print(f"private key: {private} (keep it secret)\npublic key:  {public} (give it to verifiers and Kyverno)")
    if password is None:
        errors.print(f"[yellow]warning:[/] {private} is not encrypted; set VULNATTEST_KEY_PASSWORD to encrypt it")


@keys_app.command("export")
def keys_export(
    key: Annotated[Path, typer.Argument(help="a vulnattest (PEM) key", exists=True, dir_okay=False, readable=True)],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="where to write cosign.key/.pub")] = Path(),
) -> None:
    """Write KEY in cosign's own format, as cosign.key and cosign.pub, for `cosign attest --key`.

    Reads KEY with VULNATTEST_KEY_PASSWORD; encrypts cosign.key with COSIGN_PASSWORD (which may be empty).
    """
    from vulnattest.signing.cosign_keys import cosign_password
    from vulnattest.signing.keyfile import export_cosign_key

    password = cosign_password()
    if password is None:
        raise _fail("set COSIGN_PASSWORD to the password for cosign.key (cosign reads it too; empty for none)")
    try:
        private, public = export_cosign_key(key, output_dir, source_password=None, password=password)
    except VulnattestError as e:
        raise _fail(str(e)) from None
    console.print(f"cosign key: {private} (keep it secret)\npublic key: {public}")


@app.command()
def run(
    config: ConfigOption,
    image: Annotated[list[str] | None, typer.Option("--image", "-i", help="only these images (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list, one object per image, on stdout")] = False,
) -> None:
    """Run scan-and-attest once; exit 0 when every image was attested, 1 otherwise (2: bad config, key or images).

    Uses the Prefect API in PREFECT_API_URL, or a local Prefect server started for the command (its database in
    PREFECT_HOME) when it is unset. When the API is lost mid-run, says so and reads what was attested from the
    registry (exit 1).
    """
    from flows import results_of
    from flows.local import call_flow, drain_prefect_workers, prefect_api
    from flows.scan_and_attest import scan_and_attest

    try:
        fleet = load_config(config)
        with prefect_api() as api:
            called = call_flow(lambda: scan_and_attest(config_path=str(config), images=image or None,
                                                       return_state=True))
            drain_prefect_workers()
        outcomes = results_of(called.state) if called.state is not None else None
    except VulnattestError as e:
        raise _fail(str(e)) from None
    if outcomes is not None and as_json:
        typer.echo(json.dumps([o.to_json() for o in outcomes], indent=2))
    elif outcomes is not None:
        _print_outcomes(outcomes)
    if called.lost is not None or called.state is None:
        _report_lost_api(api, called.lost or "no state", fleet.with_images(image) if image else fleet, str(config),
                         called.started)
        _exit_now(1)
    raise typer.Exit(0 if called.state.is_completed() and all(o.ok for o in outcomes or []) else 1)


def _report_lost_api(api: str, reason: str, fleet: FleetConfig, source: str, started: float) -> None:
    """Say the Prefect API was lost, and what the registry holds: each image's attestation made since `started`."""
    from vulnattest.freshness import FreshnessChecker, check_fleet
    from vulnattest.services import Services

    errors.print(f"[bold red]error:[/] lost the Prefect API at {api} ({reason}); the run's record on the server is "
                 "incomplete (it may show it Running). What the registry holds now:", highlight=False)
    services = Services.for_checking(fleet)
    try:
        checker = FreshnessChecker.from_config(fleet, services.verifier(), source)
        verdicts = check_fleet(checker, services.registries, fleet.image_refs(), concurrency=fleet.concurrency)
    finally:
        services.close()
    since = datetime.fromtimestamp(started, UTC)
    table = Table(title="attested since the run started, as the registry shows")
    for column in ("image", "digest", "attested by this run", "verdict"):
        table.add_column(column, overflow="fold")
    done = 0
    for v in verdicts:
        attested = v.last_scan is not None and v.last_scan.finished >= since and v.ok
        done += attested
        table.add_row(v.image, (v.digest or "-")[:19], "[green]yes[/]" if attested else "[red]no[/]",
                      v.verdict.value)
    console.print(table)
    console.print(f"{done} of {len(verdicts)} image(s) attested by this run; run `vulnattest run` again for the "
                  "others once the Prefect API is back", style="red", highlight=False)


def _print_outcomes(outcomes: list[ImageOutcome]) -> None:
    table = Table(title="scan-and-attest", show_lines=False)
    for column in ("image", "digest", "findings C H M L U", "result"):
        table.add_column(column, overflow="fold")
    for o in sorted(outcomes, key=lambda o: (o.ok, o.image)):
        result = "[green]attested[/]" if o.ok else f"[red]failed at {o.failed_stage}[/]: {o.error}"
        table.add_row(o.image, (o.digest or "-")[:19], o.findings_text(), result)
    console.print(table)
    ok = sum(o.ok for o in outcomes)
    console.print(f"{ok} of {len(outcomes)} image(s) attested", style="green" if ok == len(outcomes) else "red")


@app.command()
def verify(
    image: Annotated[str, typer.Argument(help="image reference, by tag or digest")],
    key: Annotated[list[Path] | None, typer.Option("--key", "-k", help="trusted PEM public key (repeatable)",
                                                   exists=True, dir_okay=False)] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="trust what this fleet config trusts "
                                                "(keys, KMS keys, keyless identities), with its registries and policy",
                                                exists=True, dir_okay=False)] = None,
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="trust the signers a Kyverno ClusterPolicy's "
                                                "attestors accept for IMAGE, and its scan age limit (findings "
                                                "conditions come from --config)", exists=True, dir_okay=False)] = None,
    max_age: Annotated[str | None, typer.Option(help="oldest acceptable scanFinishedOn (default 168h, or the "
                                                "policy's limit, or the config's freshness.max_age)")] = None,
    insecure: Annotated[bool, typer.Option(help="speak plain HTTP to the registry")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    attach: Annotated[Layout | None, typer.Option(
        "--attach", help="where to read attestations: legacy (cosign's .att tag, Kyverno `type: Cosign`), bundle "
        "(Sigstore bundle referrers, `type: SigstoreBundle`) or both (default: the config's attach, else legacy)",
    )] = None,
) -> None:
    """Verify IMAGE's vuln attestations as Kyverno would; exit 0 when valid and younger than max-age, else 1.

    Checks each attestation's signature, subject digest, predicate type and scanFinishedOn, and (with --config)
    the vulnerability policy. Exit 2 on bad input, an unknown image, or a registry that cannot be reached.
    """
    from vulnattest.config import FleetConfig
    from vulnattest.freshness import FreshnessChecker
    from vulnattest.registry import RegistryClient, docker_credentials
    from vulnattest.signing.factory import verifier_from_settings
    from vulnattest.signing.interface import PublicKeyVerifier
    from vulnattest.verification import LAYOUTS

    try:
        if key is None and config is None and policy is None:
            raise VulnattestError("give the public key to trust (--key vulnattest.pub), a fleet config (--config) "
                                  "or a Kyverno policy (--policy)")
        if key and policy:
            raise VulnattestError("give the signers to trust once: --key or --policy, not both")
        fleet = load_config(config) if config else FleetConfig()
        ref = ImageRef.parse(image)
        verifier: Verifier
        limit = fleet.freshness.max_age
        layouts = LAYOUTS[fleet.attach]
        if key:
            verifier = PublicKeyVerifier.from_pem_files(key)
        elif policy:
            required = _policy_requirements(policy, ref)
            verifier, limit, layouts = required.verifier, required.max_age or limit, required.layouts
        else:
            verifier = verifier_from_settings(fleet.signing)
        limit = parse_duration(max_age) if max_age else limit
        checker = FreshnessChecker.from_config(fleet, verifier, str(config or "fleet.yaml")).with_max_age(limit)
        checker = dataclasses.replace(checker, layouts=LAYOUTS[attach.value] if attach is not None else layouts)
        client = RegistryClient(ref.registry, insecure=insecure or ref.registry in fleet.insecure_registries(),
                                credentials=docker_credentials(ref.registry))
        verdict = checker.check(client, ref)
    except (VulnattestError, ValueError) as e:
        raise _fail(str(e)) from None
    ok = verdict.verdict.value in ("fresh", "expiring")
    if as_json:
        typer.echo(json.dumps({**verdict.to_json(), "ok": ok}, indent=2))
    else:
        colour, word = ("green", "OK") if ok else ("red", "FAIL")
        console.print(f"[{colour}]{word}[/] {verdict.image}@{verdict.digest or '?'}: {verdict.verdict.value}: "
                      f"{verdict.reason}", highlight=False)
        if not ok:
            console.print(f"  to fix: {verdict.action}", highlight=False)
    raise typer.Exit(0 if ok else 1 if verdict.digest else 2)


def _policy_requirements(path: Path, image: ImageRef) -> PolicyRequirements:
    import yaml

    from vulnattest.kyverno import policy_requirements

    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise VulnattestError(f"cannot read the Kyverno policy {path}: {e}") from e
    if not isinstance(document, dict) or document.get("kind") not in ("ClusterPolicy", "Policy"):
        raise VulnattestError(f"{path} is not a Kyverno ClusterPolicy; write one with `vulnattest policy kyverno`")
    return policy_requirements(document, image, str(path))


_VERDICT_STYLES = {"fresh": "green", "expiring": "yellow", "stale": "bold red", "missing": "bold red",
                   "invalid": "bold red", "policy": "magenta", "unreachable": "red"}


@app.command()
def status(
    config: ConfigOption,
    image: Annotated[list[str] | None, typer.Option("--image", "-i", help="only these images (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list, one object per image")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="list fresh images too")] = False,
) -> None:
    """Check each image's vuln attestations now, as admission will, and print the fleet table.

    Runs here, without Prefect, retries or alerts (`vulnattest check` runs the flow). Exit 0 once the table is
    printed, 2 when the configuration is invalid.
    """
    from vulnattest.freshness import FreshnessChecker, check_fleet
    from vulnattest.services import Services

    try:
        from vulnattest.discovery import discovered_fleet

        fleet = load_config(config)
        fleet, origins = (fleet.with_images(image), {}) if image else discovered_fleet(fleet)
        if not fleet.images:
            raise VulnattestError(f"no images to check: list them under `images:` in {config} or pass --image")
        services = Services.for_checking(fleet)
        checker = FreshnessChecker.from_config(fleet, services.verifier(), str(config))
    except VulnattestError as e:
        raise _fail(str(e)) from None
    try:
        verdicts = check_fleet(checker, services.registries, fleet.image_refs(), concurrency=fleet.concurrency)
    finally:
        services.close()
    if as_json:
        typer.echo(json.dumps([{**v.to_json(), "source": origins.get(v.image)} for v in verdicts], indent=2))
    else:
        _print_verdicts(verdicts, show_all, origins if fleet.sources else None)


@app.command()
def check(
    config: ConfigOption,
    image: Annotated[list[str] | None, typer.Option("--image", "-i", help="only these images (repeatable)")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="list fresh images too")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list, one object per image, on stdout")] = False,
) -> None:
    """Run check-freshness once (alerts and events included); exit 0 when every image is fresh, 1 otherwise.

    Also exits 1 when an alert could not be delivered. Uses the Prefect API in PREFECT_API_URL, or a local Prefect
    server started for the command when it is unset.
    """
    from flows import results_of
    from flows.check_freshness import check_freshness
    from flows.local import call_flow, drain_prefect_workers, prefect_api

    try:
        load_config(config)
        with prefect_api() as api:
            called = call_flow(lambda: check_freshness(config_path=str(config), images=image or None,
                                                       return_state=True))
            drain_prefect_workers()
    except VulnattestError as e:
        raise _fail(str(e)) from None
    if called.state is None:
        _fail(f"lost the Prefect API at {api} ({called.lost}); the check did not finish: run `vulnattest status` for "
              "the verdicts without Prefect", 1)
        _exit_now(1)
    try:
        verdicts = results_of(called.state)
    except VulnattestError as e:
        raise _fail(str(e), 1) from None
    if as_json:
        typer.echo(json.dumps([v.to_json() for v in verdicts], indent=2))
    else:
        _print_verdicts(verdicts, show_all)
    state = called.state
    if called.lost is not None:
        errors.print(f"[bold red]lost the Prefect API at {api}[/] ({called.lost}): the verdicts above stand, but "
                     "alerts and events may not have gone out", highlight=False)
        _exit_now(1)
    if not state.is_completed():
        errors.print(f"[bold red]check-freshness failed:[/] {state.message}", highlight=False)
    raise typer.Exit(0 if state.is_completed() and all(v.ok for v in verdicts) else 1)


def _exit_now(code: int) -> NoReturn:
    """Exit at once, skipping Prefect's at-exit delivery of queued events and logs: with the API gone it retries
    each one for seconds (minutes in all), and none of them can arrive."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _print_verdicts(verdicts: list[ImageVerdict], show_all: bool, origins: dict[str, str] | None = None) -> None:
    """The fleet table, worst first; with `origins`, a column saying where each image came from."""
    from vulnattest.freshness import counts_text, worst_first

    shown = [v for v in worst_first(verdicts) if show_all or not v.ok]
    if shown:
        table = Table(title="check-freshness: " + ("every image" if show_all else "not fresh, worst first"))
        for column in ("verdict", "image", *(["from"] if origins else []), "age", "deadline", "reason", "action"):
            table.add_column(column, overflow="fold")
        for v in shown:
            style = _VERDICT_STYLES.get(v.verdict.value, "")
            age = format_duration(v.age) if v.age is not None else "-"
            origin = [origins.get(v.image, "-")] if origins else []
            table.add_row(f"[{style}]{v.verdict.value}[/]", v.image, *origin, age, v.deadline_text(), v.reason,
                          v.action)
        console.print(table)
    all_fresh = all(v.ok for v in verdicts)
    console.print(counts_text(verdicts), style="green" if all_fresh else "red", highlight=False)


@app.command()
def serve(
    config: ConfigOption,
    ui: Annotated[bool, typer.Option(help="start a local Prefect server with its UI (done anyway when "
                                          "PREFECT_API_URL is unset)")] = False,
    port: Annotated[int, typer.Option(help="port of the local Prefect server")] = 4200,
    scan_cron: Annotated[str, typer.Option(help="cron (UTC) of scan-and-attest")] = "23 1 * * *",
    check_cron: Annotated[str, typer.Option(help="cron (UTC) of check-freshness")] = "7 * * * *",
    automations: Annotated[bool, typer.Option(
        help="also create (or replace, by name) the Prefect Automations of deployments/automations/: dead man's "
        "switches that notify the config's `prefect_block` channels, and a rescan of an expiring or missing "
        "image")] = False,
) -> None:
    """Serve the scan-and-attest and check-freshness deployments, on their schedules, until interrupted.

    Runs against the Prefect API in PREFECT_API_URL. When it is unset (or with --ui), starts a local Prefect server
    first, its database in PREFECT_HOME, whose UI shows both deployments, their schedules, and a form to run them
    by hand: Prefect's embedded server runs no scheduler, so on it nothing would ever run.
    """
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    from deployments.serve import fleet_deployments

    try:
        fleet = load_config(config)
        deployments = fleet_deployments(str(config.resolve()), scan_cron=scan_cron, check_cron=check_cron)
    except (VulnattestError, ValueError) as e:  # a bad config, a cron expression that is not one
        raise _fail(str(e)) from None
    if not ui and PREFECT_API_URL.value():
        if automations:
            _apply_automations(deployments, fleet)
        prefect_serve(*deployments)
        return
    from deployments.server import LocalPrefectServer

    server = LocalPrefectServer(port=port, home=Path(PREFECT_HOME.value()))
    runner: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _: object) -> None:
        # stopped by a service manager: the runner is told (it cancels its runs and exits, ending the wait below),
        # and the server stops after it; no wait here: a handler that waits deadlocks the wait it interrupted
        if runner is None:
            raise SystemExit(128 + signum)
        runner.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.start()
        console.print(f"Prefect UI: {server.url}  (deployments: scan-and-attest/fleet, check-freshness/fleet)")
        env = {**os.environ, **server.environment()}
        # the runner must talk to the server just started, so it runs in a child with that environment
        runner = subprocess.Popen(
            [sys.executable, "-m", "vulnattest", "serve", "--config", str(config.resolve()),
             "--scan-cron", scan_cron, "--check-cron", check_cron, *(["--automations"] if automations else [])],
            env=env,
        )
        try:
            code = runner.wait()
        except KeyboardInterrupt:  # Ctrl-C: stop the runner as a service manager would, and wait for it
            runner.terminate()
            code = runner.wait()
    except VulnattestError as e:
        raise _fail(str(e)) from None
    finally:
        server.stop()
    raise typer.Exit(code if code >= 0 else 128 - code)  # a runner ended by a signal: the shell's convention


def _apply_automations(deployments: list[RunnerDeployment], fleet: FleetConfig) -> None:
    """Register `deployments`, then create or replace the automations that name them."""
    for deployment in deployments:
        deployment.apply()
    _replace_automations(fleet)


@app.command()
def automations(config: ConfigOption) -> None:
    """Create, or replace by name, the Prefect Automations of deployments/automations/ on the Prefect API in
    PREFECT_API_URL: dead man's switches that notify the config's `prefect_block` channels when a deployment stops
    completing, and a rescan of an expiring or missing image.

    For deployments made with `prefect deploy`; they must exist first (the automations name them by id).
    """
    from prefect.settings import PREFECT_API_URL

    try:
        fleet = load_config(config)
    except VulnattestError as e:
        raise _fail(str(e)) from None
    if not PREFECT_API_URL.value():
        raise _fail("PREFECT_API_URL is unset: point it at the Prefect server the deployments are on")
    _replace_automations(fleet)


def _replace_automations(fleet: FleetConfig) -> None:
    from deployments.fleet_automations import apply_automations

    try:
        applied = apply_automations(fleet)
    except VulnattestError as e:
        raise _fail(str(e)) from None
    for name, replaced in applied:
        console.print(f"{'replaced' if replaced else 'created'} automation {name!r}", highlight=False)


@app.command()
def demo(
    workdir: Annotated[Path | None, typer.Option(help="keep the demo's files (config, keys, reports) here")] = None,
    admission: Annotated[bool, typer.Option(
        help="also put a Pod before Kyverno's real admission controller (a local kube-apiserver): created while its "
        "scan is fresh, denied once aged; needs the binaries `python -m tests.oracles build` makes")] = False,
) -> None:
    """Walk through the whole job offline: demo images, scan, attest, check, a stale image and its alert.

    Needs Debian's docker-registry on PATH; starts nothing that outlives it.
    """
    from vulnattest.walkthrough import run_demo

    try:
        code = run_demo(console, workdir, admission=admission)
    except VulnattestError as e:
        raise _fail(str(e)) from None
    raise typer.Exit(code)


policy_app = typer.Typer(help="Write admission policies that match what the pipeline produces.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("kyverno")
def policy_kyverno(
    config: ConfigOption,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
    audit: Annotated[bool, typer.Option(help="Audit instead of Enforce")] = False,
    kind: Annotated[PolicyKind, typer.Option(
        help="ClusterPolicy (kyverno.io/v1, verifyImages: reads the layouts `attach` writes) or "
        "ImageValidatingPolicy (policies.kyverno.io, CEL: reads Sigstore bundles only)")] = PolicyKind.cluster_policy,
) -> None:
    """Write a Kyverno policy: fleet images, trusted keys or identities, max age, findings conditions."""
    import yaml

    from vulnattest.kyverno import cluster_policy, image_validating_policy

    generate = cluster_policy if kind is PolicyKind.cluster_policy else image_validating_policy
    try:
        policy = generate(load_config(config), datetime.now(UTC), enforce=not audit)
    except VulnattestError as e:
        raise _fail(str(e)) from None
    text = yaml.safe_dump(policy, sort_keys=False, width=1000)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


def main() -> None:
    """Entry point for ``python -m vulnattest``."""
    app()
