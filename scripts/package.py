"""Package the Lambda functions: one zip per function package, then `osls package` for the CloudFormation template.

    python scripts/package.py [--stage dev] [--only billing] [--artifacts-only] [--no-network]

A function package is a folder functions/<name>/ with a requirements.txt. Its artifact, build/<name>.zip,
holds exactly:
  - its pinned requirements, installed for Lambda (CPython 3.12, arm64, manylinux wheels only);
  - shared/, functions/__init__.py and functions/<name>/ (no other function package, no caches).

Artifacts are reproducible (sorted entries, fixed timestamps) and cached: installed dependencies under
build/.deps/<hash of the requirements>/, each zip keyed on that hash plus a hash of its sources, so a run with
nothing changed rebuilds nothing. Then osls (the npm devDependency, installed with `npm ci` when missing)
writes .serverless/cloudformation-template-update-stack.json. That step needs no AWS account: settings are
CloudFormation dynamic references resolved at deploy time, and osls runs with placeholder credentials, no
AWS profile and no instance metadata; --no-network runs it without any network at all (Linux `unshare`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
DEPS_CACHE = BUILD / ".deps"
TEMPLATE = ROOT / ".serverless" / "cloudformation-template-update-stack.json"

# Lambda's python3.12 runtime: Amazon Linux 2023 (glibc 2.34) on Graviton. Every glibc baseline up to 2.34 is
# listed because older pips do not expand one manylinux tag into the older ones it is compatible with.
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
# Part of every cache key: bump when the layout of an artifact changes.
LAYOUT_VERSION = "2"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
SKIPPED_SUFFIXES = {".pyc", ".pyo"}
# pip's --target puts console scripts in bin/; nothing in Lambda runs them.
SKIPPED_DEPENDENCY_ROOTS = {"bin"}

PLACEHOLDER_AWS_ENV = {
    # osls builds the template without calling AWS; these keep the SDK from looking for real credentials
    # (profiles, SSO, instance metadata) should anything ask for them.
    "AWS_ACCESS_KEY_ID": "AKIAPACKAGEONLY00000",
    "AWS_SECRET_ACCESS_KEY": "package-only-placeholder-not-a-credential",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SDK_LOAD_CONFIG": "0",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "SLS_TELEMETRY_DISABLED": "1",
    "SLS_NOTIFICATIONS_MODE": "off",
}


class PackagingError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[package] {message}", flush=True)


# --- requirements -----------------------------------------------------------------------------------------------


def _display(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Requirements:
    path: Path
    files: tuple[Path, ...]  # this file and every file it includes with -r, in order
    pins: dict[str, str]  # normalized name -> exact version

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(f"layout={LAYOUT_VERSION} python={PYTHON_VERSION} platforms={','.join(PLATFORMS)}\n".encode())
        for file in self.files:
            h.update(_display(file).encode() + b"\0" + file.read_bytes() + b"\0")
        return h.hexdigest()


def read_requirements(path: Path) -> Requirements:
    files: list[Path] = []
    pins: dict[str, str] = {}

    def visit(file: Path) -> None:
        if file in files:
            return
        files.append(file)
        for number, raw in enumerate(file.read_text().splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith(("-r ", "--requirement ")):
                visit((file.parent / line.split(maxsplit=1)[1]).resolve())
                continue
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)", line)
            if not match:
                raise PackagingError(f"{_display(file)}:{number}: pin an exact version (name==version): {raw}")
            pins[_normalize(match.group(1))] = match.group(3)

    visit(path.resolve())
    return Requirements(path=path, files=tuple(files), pins=pins)


def install_dependencies(requirements: Requirements) -> Path:
    """The requirements installed for Lambda, from the cache when this exact set was installed before."""
    target = DEPS_CACHE / requirements.digest[:16]
    if (target / ".complete").exists():
        return target
    DEPS_CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="deps-", dir=DEPS_CACHE))
    report = staging / "pip-report.json"
    site = staging / "site"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",  # .pyc files of this interpreter would be useless to python3.12
        "--only-binary=:all:",
        *[arg for platform in PLATFORMS for arg in ("--platform", platform)],
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--target",
        str(site),
        "--report",
        str(report),
        "--requirement",
        str(requirements.path),
    ]
    log(f"installing {_display(requirements.path)} for python{PYTHON_VERSION} arm64")
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PackagingError(
                f"pip could not install {_display(requirements.path)} for Lambda "
                f"(python{PYTHON_VERSION}, arm64 manylinux wheels):\n{result.stderr.strip()}"
            )
        installed = {
            _normalize(item["metadata"]["name"]): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]
        }
        unpinned = sorted(set(installed) - set(requirements.pins))
        if unpinned:
            raise PackagingError(
                f"{_display(requirements.path)} does not pin every dependency; pip also installed: "
                + ", ".join(f"{name}=={installed[name]}" for name in unpinned)
            )
        for name in SKIPPED_DEPENDENCY_ROOTS:
            shutil.rmtree(site / name, ignore_errors=True)
        for cache in list(site.rglob("__pycache__")):
            shutil.rmtree(cache, ignore_errors=True)
        (site / ".complete").write_text(json.dumps(installed, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        site.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --- sources and zips --------------------------------------------------------------------------------------------


def _files_under(base: Path) -> list[Path]:
    """Files below base, sorted, without caches, bytecode and hidden files (pip's .complete marker among them)."""
    found = []
    for directory, subdirs, names in os.walk(base):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith("."))
        found.extend(
            Path(directory) / name
            for name in sorted(names)
            if Path(name).suffix not in SKIPPED_SUFFIXES and not name.startswith(".")
        )
    return found


def source_files(package: str) -> dict[str, Path]:
    """Archive name -> file: shared/, functions/__init__.py and functions/<package>/."""
    files = {"functions/__init__.py": ROOT / "functions" / "__init__.py"}
    for base in (ROOT / "shared", ROOT / "functions" / package):
        for file in _files_under(base):
            files[file.relative_to(ROOT).as_posix()] = file
    return files


def _digest_files(files: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name].read_bytes()).digest())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_zip(destination: Path, files: dict[str, Path]) -> None:
    """A reproducible zip: sorted entries, one timestamp, permissions that only depend on the exec bit."""
    partial = destination.with_name(destination.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name in sorted(files):
            source = files[name]
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if os.access(source, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, source.read_bytes(), compresslevel=6)
    partial.replace(destination)


@dataclass
class Artifact:
    package: str
    path: Path
    key: str
    dependencies_key: str
    built: bool
    seconds: float


def build_artifact(package: str) -> Artifact:
    started = time.perf_counter()
    requirements = read_requirements(ROOT / "functions" / package / "requirements.txt")
    sources = source_files(package)
    key = hashlib.sha256(f"{requirements.digest}\n{_digest_files(sources)}".encode()).hexdigest()
    artifact = BUILD / f"{package}.zip"
    stamp = BUILD / f"{package}.zip.json"
    if artifact.exists() and stamp.exists():
        recorded = json.loads(stamp.read_text())
        if recorded.get("key") == key and recorded.get("sha256") == _sha256(artifact):
            return Artifact(
                package, artifact, key, requirements.digest[:16], built=False, seconds=time.perf_counter() - started
            )

    site = install_dependencies(requirements)
    files = {path.relative_to(site).as_posix(): path for path in _files_under(site)}
    clashes = sorted(set(files) & set(sources))
    if clashes:
        raise PackagingError(f"a dependency of {package} ships files named like the project's: {clashes[:5]}")
    files.update(sources)
    write_zip(artifact, files)
    stamp.write_text(
        json.dumps(
            {
                "package": package,
                "key": key,
                "sha256": _sha256(artifact),
                "bytes": artifact.stat().st_size,
                "requirements": dict(sorted(requirements.pins.items())),
            },
            indent=2,
        )
        + "\n"
    )
    return Artifact(package, artifact, key, requirements.digest[:16], built=True, seconds=time.perf_counter() - started)


def function_packages() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "functions").glob("*/requirements.txt"))


def prune_dependency_cache(keep: set[str]) -> None:
    if not DEPS_CACHE.exists():
        return
    for entry in DEPS_CACHE.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)


# --- osls --------------------------------------------------------------------------------------------------------


def osls_executable() -> Path:
    """node_modules/.bin/osls at the version package.json pins, installed from package-lock.json if needed."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise PackagingError(f"`{tool}` is not on PATH: install Node.js 20.19+ (with npm) to package the stack")
    wanted = json.loads((ROOT / "package.json").read_text())["devDependencies"]["osls"]
    installed = ROOT / "node_modules" / "osls" / "package.json"
    executable = ROOT / "node_modules" / ".bin" / "osls"
    if not executable.exists() or not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        log(f"installing osls {wanted} (npm ci)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True)
    return executable


def osls_environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(PLACEHOLDER_AWS_ENV)
    return env


def network_isolation() -> list[str]:
    """A command prefix that runs its command with no network, or an error saying why that is unavailable."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise PackagingError("--no-network needs util-linux's `unshare`")
    for prefix in ([unshare, "--net"], [unshare, "--map-root-user", "--net"]):
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
            return prefix
    raise PackagingError("--no-network: this machine does not allow a new network namespace (unshare --net)")


def package_stack(stage: str, *, no_network: bool) -> Path:
    executable = osls_executable()
    prefix = network_isolation() if no_network else []
    TEMPLATE.unlink(missing_ok=True)
    command = [*prefix, str(executable), "package", "--stage", stage]
    log(f"osls package --stage {stage}" + (" (no network)" if no_network else ""))
    result = subprocess.run(command, cwd=ROOT, env=osls_environment(), capture_output=True, text=True, check=False)
    if "httpApi.cors.allowedOrigins" in result.stdout + result.stderr:
        raise PackagingError(
            f"stage {stage} names no web origins: list the web client's origins (e.g. https://app.example.com) under "
            f"params.{stage}.webOrigins in serverless.yml; there is no default, so no stage allows localhost unless "
            "it says so"
        )
    if result.returncode != 0 or not TEMPLATE.exists():
        raise PackagingError(f"osls package failed ({result.returncode}):\n{result.stdout}\n{result.stderr}".strip())
    return TEMPLATE


LOCAL_ORIGIN = re.compile(r"^https?://(localhost|127\.0\.0\.1)(:\d+)?$")


def check_web_origins(template: Path, stage: str) -> None:
    """A real stage that allows browsers only from local origins would deploy an API its web client cannot call."""
    resources = json.loads(template.read_text(encoding="utf-8"))["Resources"]
    origins = [
        origin
        for resource in resources.values()
        if resource["Type"] == "AWS::ApiGatewayV2::Api"
        for origin in resource["Properties"].get("CorsConfiguration", {}).get("AllowOrigins", [])
    ]
    if stage != "dev" and all(LOCAL_ORIGIN.match(origin) for origin in origins):
        raise PackagingError(
            f"stage {stage} allows browsers only from {', '.join(origins) or 'nowhere'}: list the web client's "
            f"origins (e.g. https://app.example.com) under params.{stage}.webOrigins in serverless.yml"
        )


# --- main --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", default=os.environ.get("STAGE", "dev"))
    parser.add_argument("--only", action="append", help="function package(s) to build (default: all)")
    parser.add_argument("--artifacts-only", action="store_true", help="build the zips, skip osls")
    parser.add_argument("--no-network", action="store_true", help="run osls in a namespace without network")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    packages = args.only or function_packages()
    unknown = sorted(set(packages) - set(function_packages()))
    try:
        if unknown:
            raise PackagingError(f"no functions/<name>/requirements.txt for: {', '.join(unknown)}")
        BUILD.mkdir(exist_ok=True)
        artifacts = [build_artifact(package) for package in packages]
        if not args.only:
            prune_dependency_cache({artifact.dependencies_key for artifact in artifacts})
        for artifact in artifacts:
            state = "built" if artifact.built else "cached"
            size = artifact.path.stat().st_size / 1_048_576
            log(f"{artifact.path.relative_to(ROOT)}: {size:.1f} MiB, {state} in {artifact.seconds:.1f}s")
        if not args.artifacts_only:
            step = time.perf_counter()
            template = package_stack(args.stage, no_network=args.no_network)
            check_web_origins(template, args.stage)
            log(f"{template.relative_to(ROOT)} written in {time.perf_counter() - step:.1f}s")
    except (PackagingError, subprocess.CalledProcessError) as error:
        print(f"[package] error: {error}", file=sys.stderr)
        return 1
    log(f"done in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
