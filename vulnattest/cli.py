"""The ``vulnattest`` command line: the outermost layer, the only one that configures logging or exits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vulnattest.config import format_duration, load_config, parse_duration
from vulnattest.errors import VulnattestError
from vulnattest.images import ImageRef
from vulnattest.outcomes import ImageOutcome

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


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@keys_app.command("generate")
def keys_generate(
    directory: Annotated[Path, typer.Argument(help="where to write vulnattest.key and vulnattest.pub")],
) -> None:
    """Write a new ECDSA P-256 key pair (encrypted when VULNATTEST_KEY_PASSWORD is set)."""
    from vulnattest.signing.keyfile import generate_keypair, key_password

    try:
        private, public = generate_keypair(directory, key_password())
    except VulnattestError as e:
        raise _fail(str(e)) from None
    console.print(f"private key: {private} (keep it secret)\npublic key:  {public} (give it to verifiers and Kyverno)")


@app.command()
def run(
    config: ConfigOption,
    image: Annotated[list[str] | None, typer.Option("--image", "-i", help="only these images (repeatable)")] = None,
) -> None:
    """Run scan-and-attest once; exit 0 when every image was attested, 1 otherwise.

    Uses the Prefect API in PREFECT_API_URL, or a temporary embedded server when it is unset.
    """
    from flows.scan_and_attest import scan_and_attest

    try:
        load_config(config)
    except VulnattestError as e:
        raise _fail(str(e)) from None
    state = scan_and_attest(config_path=str(config), images=image or None, return_state=True)
    outcomes = state.result(raise_on_failure=False)
    if not isinstance(outcomes, list):
        raise _fail(f"scan-and-attest did not run: {outcomes}", 1)
    _print_outcomes(outcomes)
    raise typer.Exit(0 if state.is_completed() and all(o.ok for o in outcomes) else 1)


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
    key: Annotated[list[Path], typer.Option("--key", "-k", help="trusted PEM public key (repeatable)", exists=True,
                                            dir_okay=False)],
    max_age: Annotated[str, typer.Option(help="oldest acceptable scanFinishedOn, e.g. 168h")] = "168h",
    insecure: Annotated[bool, typer.Option(help="speak plain HTTP to the registry")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Verify IMAGE's vuln attestation as Kyverno would; exit 0 when valid and younger than --max-age, else 1."""
    from vulnattest.registry import RegistryClient, docker_credentials, resolve
    from vulnattest.signing.interface import PublicKeyVerifier
    from vulnattest.verification import check_attestations

    try:
        limit = parse_duration(max_age)
        ref = ImageRef.parse(image)
        verifier = PublicKeyVerifier.from_pem_files(key)
        client = RegistryClient(ref.registry, insecure=insecure, credentials=docker_credentials(ref.registry))
        resolved = resolve(client, ref)
        checks = check_attestations(client, resolved, verifier)
    except (VulnattestError, ValueError) as e:
        raise _fail(str(e)) from None
    now = datetime.now(UTC)
    result: dict[str, Any] = {"image": image, "digest": resolved.digest, "attestations": len(checks)}
    if not checks:
        ok, reason = False, f"no vuln attestation attached to {resolved.image.pinned}; run `vulnattest run`"
    elif bad := [c for c in checks if not c.ok]:
        ok, reason = False, bad[0].reason
    else:
        oldest = min(c.scan_finished for c in checks if c.scan_finished)
        age = now - oldest
        result.update(scan_finished_on=oldest.isoformat(), age_seconds=int(age.total_seconds()))
        ok = age <= limit
        reason = (f"scanned {format_duration(age)} ago (limit {format_duration(limit)})" if ok else
                  f"stale: scanned {format_duration(age)} ago, over the limit of {format_duration(limit)}")
    result.update(ok=ok, reason=reason)
    if as_json:
        console.print_json(json.dumps(result))
    else:
        console.print(f"[{'green' if ok else 'red'}]{'OK' if ok else 'FAIL'}[/] {resolved.image.pinned}: {reason}")
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    """Entry point for ``python -m vulnattest``."""
    app()
