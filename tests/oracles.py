"""The real readers the tests judge vulnattest's output with: cosign, Kyverno's CLI and controller, etcd,
kube-apiserver and kubectl, built from the Go module proxy once per machine into a cache folder.

    python -m tests.oracles build [NAME ...]     # build what is missing (all by default)
    python -m tests.oracles path NAME            # where NAME's binary is (or would be)

The cache is ``$VULNATTEST_TOOLS`` (default ``~/.cache/vulnattest-tools``), a folder per tool and version, so a
changed version builds beside the old one. A build writes into a temporary folder and renames it into place: a
build cut short leaves nothing that looks built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

COSIGN_VERSION = "v3.1.3"
KYVERNO_VERSION = "v1.19.1"
ETCD_VERSION = "v3.6.8"
KUBERNETES_VERSION = "v1.36.3"


def tools_dir() -> Path:
    """The per-machine cache of built tools."""
    configured = os.environ.get("VULNATTEST_TOOLS")
    return Path(configured) if configured else Path.home() / ".cache" / "vulnattest-tools"


def _go_env() -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-trimpath"}


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=cwd, env=env or _go_env(), check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
        raise SystemExit(f"`{' '.join(cmd)}` failed with exit code {done.returncode}")
    return done.stdout


def _module_copy(module: str, version: str, into: Path) -> Path:
    """A writable copy of a module's source from the Go module proxy (its zip holds no go.work and may vendor)."""
    info = json.loads(_run(["go", "mod", "download", "-json", f"{module}@{version}"]))
    target = into / "src"
    shutil.copytree(info["Dir"], target, symlinks=True)
    subprocess.run(["chmod", "-R", "u+w", str(target)], check=True)
    return target


def _build_cosign(out: Path, work: Path) -> None:
    _run(["go", "install", f"github.com/sigstore/cosign/v3/cmd/cosign@{COSIGN_VERSION}"],
         env={**_go_env(), "GOBIN": str(out)})


def _kyverno_source(work: Path) -> Path:
    return _module_copy("github.com/kyverno/kyverno", KYVERNO_VERSION, work)


def _build_kyverno_cli(out: Path, work: Path) -> None:
    # `go install` refuses the module (its go.mod has replace directives): build in a copy of it
    src = _kyverno_source(work)
    flags = f"-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion={KYVERNO_VERSION}"
    _run(["go", "build", "-ldflags", flags, "-o", str(out / "kyverno"), "./cmd/cli/kubectl-kyverno"], cwd=src)


def _build_kyverno_controller(out: Path, work: Path) -> None:
    src = _kyverno_source(work)
    flags = f"-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion={KYVERNO_VERSION}"
    _run(["go", "build", "-ldflags", flags, "-o", str(out / "kyverno"), "./cmd/kyverno"], cwd=src)
    # the install manifest (CRDs, RBAC, config maps) the controller expects in its cluster
    shutil.copy(src / "config" / "install-latest-testing.yaml", out / "install.yaml")
    shutil.copytree(src / "config" / "crds", out / "crds")


def _build_etcd(out: Path, work: Path) -> None:
    src = _module_copy("go.etcd.io/etcd/server/v3", ETCD_VERSION, work)
    gomod = src / "go.mod"
    # its replace directives point at sibling modules of etcd's repository, absent from the module zip
    lines = gomod.read_text().splitlines()
    kept, in_block = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("replace ("):
            in_block = True
            continue
        if in_block:
            in_block = stripped != ")"
            continue
        if not stripped.startswith("replace "):
            kept.append(line)
    gomod.write_text("\n".join(kept) + "\n")
    _run(["go", "build", "-mod=mod", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."], cwd=src)


def _build_kubernetes(out: Path, work: Path) -> None:
    src = _module_copy("k8s.io/kubernetes", KUBERNETES_VERSION, work)
    # the module zip has no staging/ and an empty vendor/, while go.mod replaces every k8s.io/* with ./staging/...:
    # take the published staging modules of the same release instead
    for name in ("vendor", "go.work", "go.work.sum"):
        path = src / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    staging = "v0" + KUBERNETES_VERSION[2:]
    text = (src / "go.mod").read_text()
    text = re.sub(r"\nreplace \((.|\n)*?\n\)\n", "\n", text)
    text = re.sub(r"^(\s*k8s\.io/[\w./-]+) v0\.0\.0$", rf"\1 {staging}", text, flags=re.MULTILINE)
    (src / "go.mod").write_text(text)
    version = "k8s.io/component-base/version"
    flags = (f"-s -w -X {version}.gitVersion={KUBERNETES_VERSION} -X {version}.gitMajor=1 "
             f"-X {version}.gitMinor={KUBERNETES_VERSION.split('.')[1]}")
    env = {**_go_env(), "GOWORK": "off"}
    for command in ("kube-apiserver", "kubectl"):
        _run(["go", "build", "-mod=mod", "-ldflags", flags, "-o", str(out / command), f"./cmd/{command}"], cwd=src,
             env=env)


@dataclass(frozen=True)
class Tool:
    """One tool of the cache: where its binaries go and how they are built."""

    name: str
    version: str
    binaries: tuple[str, ...]
    build: Callable[[Path, Path], None]

    @property
    def folder(self) -> Path:
        return tools_dir() / f"{self.name}-{self.version}"

    def path(self, binary: str | None = None) -> Path:
        """The built binary (the tool's first by default)."""
        return self.folder / (binary or self.binaries[0])

    @property
    def built(self) -> bool:
        return all(self.path(binary).is_file() for binary in self.binaries)

    def ensure(self) -> Path:
        """Build the tool unless it is there; return its folder."""
        if self.built:
            return self.folder
        tools_dir().mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=tools_dir(), prefix=f".{self.name}-") as tmp:
            out, work = Path(tmp) / "out", Path(tmp) / "work"
            out.mkdir()
            work.mkdir()
            self.build(out, work)
            if self.folder.exists():
                shutil.rmtree(self.folder)
            out.rename(self.folder)
        print(f"built {self.name} {self.version} in {time.monotonic() - started:.0f} s: {self.folder}", flush=True)
        return self.folder


TOOLS = {
    tool.name: tool
    for tool in (
        Tool("cosign", COSIGN_VERSION, ("cosign",), _build_cosign),
        Tool("kyverno-cli", KYVERNO_VERSION, ("kyverno",), _build_kyverno_cli),
        Tool("kyverno-controller", KYVERNO_VERSION, ("kyverno", "install.yaml"), _build_kyverno_controller),
        Tool("etcd", ETCD_VERSION, ("etcd",), _build_etcd),
        Tool("kubernetes", KUBERNETES_VERSION, ("kube-apiserver", "kubectl"), _build_kubernetes),
    )
}


def build_hint(name: str) -> str:
    """The command that builds a missing tool."""
    return f"{TOOLS[name].name} {TOOLS[name].version} is not built; run `python -m tests.oracles build {name}`"


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "build":
        for name in argv[1:] or list(TOOLS):
            TOOLS[name].ensure()
        return 0
    if len(argv) == 2 and argv[0] == "path":
        print(TOOLS[argv[1]].path())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
