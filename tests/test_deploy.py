"""What can be checked of deploy/ without AWS, Docker or Nitro hardware.

- The enclave image (deploy/enclave/Dockerfile) installs exactly the Python
  environment the tests run in: the runtime closure of pyproject.toml at the
  constraints.txt pins, which are the versions installed here (static checks;
  there is no Docker engine to build with).
- The entrypoint starts the bridge and an enclave process and supervises them,
  run here on Unix sockets with a stand-in enclave process (a gRPC health
  server), health-checked through the bridge.
- The KMS key policy is valid JSON naming the Nitro attestation condition keys,
  agrees with the KMS stand-in's reading of them and with the enclave's
  encryption context; the example is what the renderer produces.
- The systemd units pass ``systemd-analyze verify`` (where installed), the host
  files agree with each other and with the image, the enclave supervisor
  handles a fake nitro-cli, the Redis config runs the relay under its ACL, and
  the PostgreSQL config names only real parameters.
- Every service's metrics endpoint is configured, on its own port, open in the
  unit's sandbox and in the runbook; the relay and the bridge, started with
  their units' command lines, serve it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import importlib.util
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devkms.policy import parse_conditions
from enclave.config import ConfigError, EnclaveConfig
from enclave.seal import SealBinding
from shardkeep.bridge import UnixAddress, VsockAddress, parse_address
from shardkeep.server import wait_healthy

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "enclave" / "Dockerfile"
REQUIREMENTS = DEPLOY / "enclave" / "requirements.txt"
UNITS = DEPLOY / "host" / "systemd"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def load_script(path: Path) -> ModuleType:
    """Import a deploy script (not a package module) by path."""
    spec = importlib.util.spec_from_file_location(f"deploy_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


entrypoint = load_script(DEPLOY / "enclave" / "entrypoint.py")
kms_policy = load_script(DEPLOY / "kms" / "policy.py")
supervisor = load_script(DEPLOY / "host" / "enclave_supervise.py")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Short paths: a Unix socket path is at most 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="skd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


### The image's Python environment


def read_pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: {raw!r} is not an exact name==version pin"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{path.name} pins {name} twice"
        pins[name] = match.group(2)
    return pins


def runtime_closure() -> set[str]:
    """pyproject's [project] dependencies and everything they need here (extras, markers)."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted: dict[str, set[str]] = {}
    stack = [Requirement(d) for d in dependencies]
    while stack:
        requirement = stack.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in wanted and extras <= wanted[name]:
            continue
        wanted.setdefault(name, set()).update(extras)
        for text in importlib.metadata.requires(name) or []:
            dependency = Requirement(text)
            environments = [{"extra": e} for e in sorted(wanted[name]) or [""]]
            if dependency.marker is None or any(
                dependency.marker.evaluate(env) for env in environments
            ):
                stack.append(dependency)
    return set(wanted)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def run_commands() -> list[list[str]]:
    """Every shell command of every RUN, split on &&, as argv lists."""
    commands: list[list[str]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "RUN":
            commands.extend(shlex.split(part) for part in rest.split("&&"))
    return commands


def pip_installs() -> list[list[str]]:
    return [c for c in run_commands() if "pip" in c[0] and "install" in c]


def test_base_images_are_pinned_by_digest_and_match_the_test_python() -> None:
    bases = [rest.split()[0] for keyword, rest in dockerfile_instructions() if keyword == "FROM"]
    assert len(bases) == 2, "a build stage and a runtime stage"
    assert len(set(bases)) == 1, "both stages must use the same pinned base"
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm@sha256:[0-9a-f]{64}", bases[0])
    assert match, f"base image {bases[0]!r} is not pinned by digest"
    assert tuple(map(int, match.groups()[:2])) == sys.version_info[:2]


def test_requirements_are_the_runtime_closure_at_the_constraint_pins() -> None:
    requirements = read_pins(REQUIREMENTS)
    constraints = read_pins(ROOT / "constraints.txt")
    assert set(requirements) == runtime_closure()
    for name, version in requirements.items():
        assert constraints.get(name) == version, f"{name}=={version} differs from constraints.txt"
        assert importlib.metadata.version(name) == version, f"the test venv has another {name}"
    # No test or lint tool slips into the image.
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not {canonicalize_name(Requirement(d).name) for d in dev["dev"]} & set(requirements)


def test_every_pin_in_the_install_steps_comes_from_constraints_or_the_makefile() -> None:
    constraints = read_pins(ROOT / "constraints.txt")
    makefile_pip = re.search(r"pip install .*--upgrade pip==(\S+)", (ROOT / "Makefile").read_text())
    assert makefile_pip
    allowed = {**constraints, "pip": makefile_pip.group(1)}
    pins = [token for command in pip_installs() for token in command if "==" in token]
    assert pins, "the install steps pin pip and setuptools"
    for token in pins:
        name, version = token.split("==")
        assert allowed.get(canonicalize_name(name)) == version, f"{token} is not a project pin"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"setuptools=={constraints['setuptools']}" in pyproject["build-system"]["requires"]


def test_install_steps_resolve_nothing_and_apply_the_constraints() -> None:
    installs = pip_installs()
    assert installs
    for command in installs:
        assert "--no-deps" in command, f"{shlex.join(command)} lets pip resolve dependencies"
    runtime = [c for c in installs if "-r" in c]
    assert len(runtime) == 1
    command = runtime[0]
    assert command[command.index("-r") + 1] == "deploy/enclave/requirements.txt"
    assert command[command.index("-c") + 1] == "constraints.txt"
    assert "--only-binary=:all:" in command
    project = [c for c in installs if any("/wheels/shardkeep-" in token for token in c)]
    assert project and "--no-index" in project[0]
    assert any(c[-1] == "check" for c in run_commands()), "pip check runs after installing"


def test_copied_files_exist_and_pass_the_dockerignore() -> None:
    ignore = (DEPLOY / "enclave" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert "*" in ignore
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _destination = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), (
                f"{source} is excluded by Dockerfile.dockerignore"
            )


def third_party_imports(paths: list[Path]) -> set[str]:
    import ast

    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__"}


def test_the_image_holds_every_package_the_enclave_imports() -> None:
    shipped = {"tss", "enclave", "shardkeep"}  # the packages the Dockerfile copies
    for package in shipped:
        assert (f"COPY {package} ./{package}") in DOCKERFILE.read_text()
    files = [p for package in shipped for p in (ROOT / package).rglob("*.py")]
    files.append(DEPLOY / "enclave" / "entrypoint.py")
    imports = third_party_imports(files)
    assert imports - shipped, "sanity: the enclave imports third-party packages"
    requirements = set(read_pins(REQUIREMENTS))
    distributions = importlib.metadata.packages_distributions()
    for module in sorted(imports - shipped):
        owners = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert owners, f"{module} is imported but installed by no distribution here"
        assert owners & requirements, f"{module} (from {owners}) is not in the image"


def test_the_cel_command_line_packages_are_in_the_image_because_import_cel_loads_them() -> None:
    # common-expression-language's __init__ imports its command-line module, so
    # typer, rich, prompt-toolkit and pygments are needed to import cel at all,
    # in the enclave too. Should a release stop loading them, they can leave the
    # image (requirements.txt says why they are there).
    probe = textwrap.dedent("""
        import importlib.metadata, json, sys
        before = set(sys.modules)
        import cel
        owners = importlib.metadata.packages_distributions()
        new = {name.split(".")[0] for name in set(sys.modules) - before}
        print(json.dumps(sorted({d for top in new for d in owners.get(top, [])})))
    """)
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = {canonicalize_name(d) for d in json.loads(result.stdout)}
    command_line = {"typer", "rich", "prompt-toolkit", "pygments"}
    assert command_line <= loaded
    assert command_line <= set(read_pins(REQUIREMENTS))
    assert {canonicalize_name(Requirement(r).name) for r in importlib.metadata.requires(
        "common-expression-language") or []} == command_line  # fmt: skip


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def dockerfile_arg(name: str) -> str:
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}")


def unit_exec(unit: str) -> list[str]:
    for line in (UNITS / unit).read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError(f"{unit} has no ExecStart")


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_image_settings_agree_with_the_entrypoint_and_the_host() -> None:
    env = dockerfile_env()
    settings = {k: v for k, v in env.items() if k.startswith("SHARDKEEP_")}
    assert set(settings) == set(entrypoint.DEFAULTS), "every setting is fixed in the image"
    assert settings["SHARDKEEP_SETUP_LOOPBACK"] == "1"
    args = entrypoint.parse_args([], settings)
    listen = parse_address(args.listen)
    assert isinstance(listen, VsockAddress) and listen.port == 5000
    assert args.config == "/etc/shardkeep/enclave.json"
    assert args.enclave_command == "/opt/shardkeep/bin/shardkeep-enclave"
    cmd = next(rest for keyword, rest in dockerfile_instructions() if keyword == "CMD")
    assert json.loads(cmd) == ["/opt/shardkeep/bin/python", "/opt/shardkeep/entrypoint.py"]
    # KMS egress: the local forward reaches the parent (CID 3) where vsock-proxy listens.
    [(forward_listen, forward_target)] = args.forward
    assert forward_listen == "tcp:127.0.0.1:443"
    proxy = unit_exec("shardkeep-vsock-proxy.service")
    assert parse_address(forward_target) == VsockAddress(3, int(proxy[1]))
    assert args.loopback_host == ["kms.${AWS_REGION}.amazonaws.com"]  # ENV expands at build
    assert proxy[2:4] == ["kms.${AWS_REGION}.amazonaws.com", "443"]
    # The host bridge reaches the enclave's CID and port; the host process uses its socket.
    run_settings = json.loads((DEPLOY / "enclave" / "run-enclave.json").read_text())
    bridge = unit_exec("shardkeep-enclave-bridge.service")
    assert parse_address(flag(bridge, "--target")) == VsockAddress(
        run_settings["enclave_cid"], listen.port
    )
    host = unit_exec("shardkeep-host.service")
    assert flag(host, "--enclave") == flag(bridge, "--listen")


def test_region_is_the_same_everywhere() -> None:
    region = dockerfile_arg("AWS_REGION")
    assert (DEPLOY / "host" / "env" / "region.env").read_text().count(f"AWS_REGION={region}") == 1
    allowlist = re.findall(
        r"^- \{address: (\S+), port: (\d+)\}$",
        (DEPLOY / "host" / "nitro" / "vsock-proxy.yaml").read_text(),
        flags=re.MULTILINE,
    )
    assert allowlist == [(f"kms.{region}.amazonaws.com", "443")], "KMS and nothing else"
    config = json.loads((DEPLOY / "enclave" / "enclave.json").read_text())
    assert config["kms"]["region"] == region
    assert config["kms"]["endpoint"] == f"https://kms.{region}.amazonaws.com"
    for key in (config["kms"]["key_id"], *config["kms"]["decrypt_key_ids"]):
        assert key.startswith(f"arn:aws:kms:{region}:"), f"{key} is not an ARN in {region}"


def test_enclave_configuration_loads_and_matches_the_image() -> None:
    config = EnclaveConfig.load(DEPLOY / "enclave" / "enclave.json")
    assert config.nsm_mode == "nitro"
    assert config.listen == dockerfile_env()["SHARDKEEP_ENCLAVE_SOCKET"]
    assert (
        "access_key_id" not in json.loads((DEPLOY / "enclave" / "enclave.json").read_text())["kms"]
    ), "AWS credentials must never be baked into the (public, measured) image"
    assert config.kms.credentials is None, "the host hands them in at run time"
    # The sealing key by alias ARN in the example account, which build.sh refuses.
    assert config.kms.key_id.endswith(":alias/shardkeep-seal")
    assert config.kms.decrypt_key_ids == (), "no older key until a rotation"
    build = (DEPLOY / "enclave" / "build.sh").read_text()
    assert ":111122223333:" in config.kms.key_id and ":111122223333:" in build


def test_enclave_refuses_a_nitro_configuration_with_credentials_or_bare_key_ids(
    tmp_path: Path,
) -> None:
    shipped = json.loads((DEPLOY / "enclave" / "enclave.json").read_text())
    for change, message in (
        ({"access_key_id": "AKID", "secret_access_key": "s"}, "must not be part"),
        ({"key_id": "alias/shardkeep-seal"}, "ARN"),
        ({"decrypt_key_ids": ["alias/shardkeep-seal-old"]}, "ARN"),
    ):
        config = {**shipped, "kms": {**shipped["kms"], **change}}
        path = tmp_path / "enclave.json"
        path.write_text(json.dumps(config))
        with pytest.raises(ConfigError, match=message):
            EnclaveConfig.load(path)


def test_enclave_command_accepts_the_entrypoint_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from enclave.main import main as enclave_main

    with pytest.raises(SystemExit):
        enclave_main(["--help"])
    usage = capsys.readouterr().out
    assert "--listen" in usage and "--config" in usage


def test_run_enclave_settings_fit_the_allocator_and_disable_debug() -> None:
    settings = json.loads((DEPLOY / "enclave" / "run-enclave.json").read_text())
    assert settings["debug_mode"] is False and settings["attach_console"] is False
    allocator_yaml = (DEPLOY / "host" / "nitro" / "allocator.yaml").read_text()
    allocator = dict(re.findall(r"^(\w+): (\d+)$", allocator_yaml, re.M))
    assert settings["cpu_count"] <= int(allocator["cpu_count"])
    assert settings["memory_mib"] <= int(allocator["memory_mib"])
    assert settings["cpu_count"] % 2 == 0, "whole cores: an enclave takes both hyper-threads"
    assert settings["enclave_cid"] >= 4, "CIDs 0-3 are reserved (3 is the parent)"
    assert Path(settings["eif_path"]).is_absolute()


### The entrypoint, on Unix sockets with a stand-in enclave process

STAND_IN = textwrap.dedent(
    """
    import argparse, asyncio, json, os
    from pathlib import Path
    from shardkeep.server import bind, mark_serving, new_server, serve_until_signalled

    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    config = json.loads(Path(args.config).read_text())
    Path(config["pid_file"]).write_text(str(os.getpid()))

    async def main():
        server, health = new_server()
        bind(server, args.listen)
        await server.start()
        await mark_serving(health, [config["service"]])
        await serve_until_signalled(server, health, grace_seconds=0.2)

    asyncio.run(main())
    """
)


class Entrypoint:
    """The entrypoint as a subprocess, wired to a stand-in enclave in ``sockdir``."""

    def __init__(self, sockdir: Path, *extra: str, command: str | None = None) -> None:
        self.sockdir = sockdir
        self.bridge = sockdir / "bridge.sock"
        self.pid_file = sockdir / "enclave.pid"
        (sockdir / "stand_in.py").write_text(STAND_IN)
        config = sockdir / "enclave.json"
        config.write_text(json.dumps({"pid_file": str(self.pid_file), "service": "stand.In"}))
        self.argv = [
            sys.executable,
            str(DEPLOY / "enclave" / "entrypoint.py"),
            "--listen", f"unix:{self.bridge}",
            "--enclave-socket", f"unix:{sockdir}/run/enclave.sock",
            "--config", str(config),
            "--enclave-command", command or f"{sys.executable} {sockdir}/stand_in.py",
            "--no-setup-loopback",
            *extra,
        ]  # fmt: skip
        # The image's ENV must not leak in from the test environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDKEEP_")}
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def wait_healthy(self) -> None:
        async def check() -> None:
            async with grpc.aio.insecure_channel(f"unix:{self.bridge}") as channel:
                await wait_healthy(channel, "stand.In", timeout=20)
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="stand.In"), timeout=5
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

        asyncio.run(check())

    def child_pid(self) -> int:
        return int(self.pid_file.read_text())

    def finish(self, timeout: float = 20) -> tuple[int, list[dict[str, Any]]]:
        _, stderr = self.process.communicate(timeout=timeout)
        events = [json.loads(x) for x in stderr.decode().splitlines() if x.startswith("{")]
        return self.process.returncode, events

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.pid_file.exists():
            pid_gone_or_kill(self.child_pid())


def pid_gone_or_kill(pid: int) -> bool:
    """True if ``pid`` is gone; otherwise kill it (cleanup) and return False."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    os.kill(pid, signal.SIGKILL)
    return False


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_entrypoint_serves_health_through_the_bridge_and_stops_on_sigterm(sockdir: Path) -> None:
    run = Entrypoint(sockdir)
    try:
        run.wait_healthy()
        child = run.child_pid()
        run.process.send_signal(signal.SIGTERM)
        status, events = run.finish()
        assert status == 0
        assert wait_gone(child), "the enclave process outlived the entrypoint"
    finally:
        run.kill()
    names = [e["event"] for e in events]
    assert "entrypoint.started" in names and "entrypoint.stopping" in names
    assert "bridge.connection_closed" in names
    assert not run.bridge.exists()
    assert (sockdir / "run").stat().st_mode & 0o777 == 0o700


def test_entrypoint_exits_non_zero_when_the_enclave_process_dies(sockdir: Path) -> None:
    run = Entrypoint(sockdir)
    try:
        run.wait_healthy()
        os.kill(run.child_pid(), signal.SIGKILL)
        status, events = run.finish()
    finally:
        run.kill()
    assert status == 128 + signal.SIGKILL
    exited = next(e for e in events if e["event"] == "entrypoint.enclave_exited")
    assert exited["returncode"] == -signal.SIGKILL
    assert not run.bridge.exists()


@pytest.mark.parametrize(("code", "expected"), [(3, 3), (0, 1)], ids=["fails", "exits-cleanly"])
def test_entrypoint_exits_non_zero_whenever_the_enclave_command_ends(
    sockdir: Path, code: int, expected: int
) -> None:
    run = Entrypoint(sockdir, command=f"{sys.executable} -c 'import sys; sys.exit({code})'")
    try:
        status, _ = run.finish()
    finally:
        run.kill()
    assert status == expected


def test_entrypoint_fails_before_the_enclave_when_the_bridge_cannot_listen(sockdir: Path) -> None:
    (sockdir / "bridge.sock").write_text("not a socket")
    run = Entrypoint(sockdir)
    try:
        status, events = run.finish()
    finally:
        run.kill()
    assert status == 1
    assert any(e["event"] == "entrypoint.bridge_failed" for e in events)
    assert not run.pid_file.exists(), "the enclave process must not start without its bridge"


def test_entrypoint_runs_forwards_and_maps_loopback_names(sockdir: Path) -> None:
    echo_path = sockdir / "echo.sock"
    echo = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    echo.bind(str(echo_path))
    echo.listen(1)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    hosts = sockdir / "hosts"
    hosts.write_text("127.0.0.1 localhost")  # no final newline
    run = Entrypoint(
        sockdir,
        "--forward", f"tcp:127.0.0.1:{port}=unix:{echo_path}",
        "--loopback-host", "kms.eu-west-1.amazonaws.com",
        "--hosts-file", str(hosts),
    )  # fmt: skip
    try:
        run.wait_healthy()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            upstream, _ = echo.accept()
            with upstream:
                client.sendall(b"tls bytes to kms")
                assert upstream.recv(100) == b"tls bytes to kms"
        run.process.send_signal(signal.SIGTERM)
        status, _ = run.finish()
    finally:
        run.kill()
        echo.close()
    assert status == 0
    assert hosts.read_text() == "127.0.0.1 localhost\n127.0.0.1 kms.eu-west-1.amazonaws.com\n"


def test_write_loopback_hosts_is_idempotent(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    entrypoint.write_loopback_hosts(hosts, ["kms.us-east-1.amazonaws.com"])
    entrypoint.write_loopback_hosts(hosts, ["kms.us-east-1.amazonaws.com", "other.example"])
    assert hosts.read_text() == ("127.0.0.1 kms.us-east-1.amazonaws.com\n127.0.0.1 other.example\n")


def test_loopback_that_is_up_is_left_alone() -> None:
    if "lo" not in {name for _, name in socket.if_nameindex()}:
        pytest.skip("no loopback interface named lo")
    assert entrypoint.ensure_loopback_up("lo") is False
    with pytest.raises(OSError):
        entrypoint.ensure_loopback_up("no-such-if0")


def test_entrypoint_settings_precedence(capsys: pytest.CaptureFixture[str]) -> None:
    defaults = entrypoint.parse_args([], {})
    assert defaults.listen == "vsock:ANY:5000"
    assert defaults.forward == [] and defaults.loopback_host == []
    assert defaults.setup_loopback is False
    environ = {
        "SHARDKEEP_BRIDGE_LISTEN": "unix:/tmp/a.sock",
        "SHARDKEEP_FORWARDS": "tcp:127.0.0.1:443=vsock:3:8000 tcp:127.0.0.1:444=vsock:3:8001",
        "SHARDKEEP_SETUP_LOOPBACK": "1",
    }
    from_env = entrypoint.parse_args([], environ)
    assert from_env.listen == "unix:/tmp/a.sock"
    assert len(from_env.forward) == 2 and from_env.setup_loopback is True
    flags = entrypoint.parse_args(["--listen", "vsock:ANY:6000", "--no-setup-loopback"], environ)
    assert flags.listen == "vsock:ANY:6000" and flags.setup_loopback is False
    for bad in (
        ["--enclave-socket", "vsock:16:5000"],
        ["--forward", "tcp:127.0.0.1:1"],
        ["--listen", "vsock:x:1"],
        ["--enclave-command", ""],
    ):
        with pytest.raises(SystemExit):
            entrypoint.parse_args(bad, {})
    assert isinstance(parse_address(defaults.enclave_socket), UnixAddress)
    capsys.readouterr()


### KMS key policy

EXAMPLE_PCRS = DEPLOY / "kms" / "example-image.pcrs.json"
EXAMPLE_POLICY = DEPLOY / "kms" / "key-policy.example.json"
CRYPTO_ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:DeriveSharedSecret",
    "kms:GenerateRandom",
)


def pcr(n: int, tag: str = "a") -> str:
    return f"{tag}{n:x}".ljust(96, "7")


def image(tag: str, signed: bool = True) -> dict[str, str]:
    values = {f"PCR{i}": pcr(i, tag) for i in (0, 1, 2)}
    if signed:
        values["PCR8"] = pcr(8, tag)
    return values


def render(images: list[dict[str, str]], **kwargs: Any) -> dict[str, Any]:
    policy: dict[str, Any] = kms_policy.render_key_policy(
        account_id="111122223333",
        host_role="shardkeep-host",
        admin_role="shardkeep-kms-admin",
        images=images,
        **kwargs,
    )
    return policy


def test_example_policy_is_what_the_renderer_produces() -> None:
    proc = subprocess.run(
        [sys.executable, str(DEPLOY / "kms" / "policy.py"), "render",
         "--account", "111122223333", "--host-role", "shardkeep-host",
         "--admin-role", "shardkeep-kms-admin", str(EXAMPLE_PCRS)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(EXAMPLE_POLICY.read_text())
    assert proc.stdout == EXAMPLE_POLICY.read_text()


def test_example_policy_names_the_attestation_conditions() -> None:
    policy = json.loads(EXAMPLE_POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    pcrs = json.loads(EXAMPLE_PCRS.read_text())
    statements = {s["Sid"]: s for s in policy["Statement"]}
    allow = [s for s in policy["Statement"] if s["Sid"].startswith("EnclaveImage")]
    assert len(allow) == 1
    conditions = allow[0]["Condition"]["StringEqualsIgnoreCase"]
    assert conditions == {f"kms:RecipientAttestation:PCR{i}": pcrs[f"PCR{i}"] for i in (0, 1, 2, 8)}
    # The KMS stand-in reads the same condition keys the same way.
    assert parse_conditions(conditions) == {i: bytes.fromhex(pcrs[f"PCR{i}"]) for i in (0, 1, 2, 8)}
    assert sorted(allow[0]["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert allow[0]["Principal"] == {"AWS": "arn:aws:iam::111122223333:role/shardkeep-host"}
    deny = statements["DenyUnattestedUse"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Condition"] == {
        "StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": [pcrs["PCR0"]]}
    }
    assert {"kms:Decrypt", "kms:GenerateDataKey"} <= set(deny["Action"])
    assert statements["DenyReEncrypt"]["Action"] == ["kms:ReEncrypt*"]


def test_no_statement_grants_cryptography_without_attestation() -> None:
    policy = json.loads(EXAMPLE_POLICY.read_text())
    for statement in policy["Statement"]:
        principal = json.dumps(statement.get("Principal"))
        assert ":root" not in principal, "an account-root grant would let IAM policies decide"
        if statement["Effect"] != "Allow":
            continue
        granted = [a for a in CRYPTO_ACTIONS if any(fnmatchcase(a, p) for p in statement["Action"])]
        if granted:
            assert (
                "kms:RecipientAttestation:PCR0" in statement["Condition"]["StringEqualsIgnoreCase"]
            )
        assert "kms:*" not in statement["Action"]


def test_policy_requires_the_enclaves_encryption_context_keys() -> None:
    binding = SealBinding(wallet_id="w", share_index=1, scheme="bip340", epoch=0)
    [allow] = [s for s in render([image("a")])["Statement"] if s["Sid"].startswith("Enclave")]
    condition = allow["Condition"]
    keys = condition["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"]
    assert sorted(keys) == sorted(binding.encryption_context())
    assert condition["Null"] == {"kms:EncryptionContextKeys": "false"}


def test_rollout_policy_allows_each_image_in_its_own_statement() -> None:
    old, new = image("a"), image("b")
    policy = render([old, new])
    allows = [s for s in policy["Statement"] if s["Sid"].startswith("EnclaveImage")]
    assert [
        s["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:PCR0"] for s in allows
    ] == [
        old["PCR0"],
        new["PCR0"],
    ]
    assert allows[0]["Sid"] != allows[1]["Sid"]
    [deny] = [s for s in policy["Statement"] if s["Sid"] == "DenyUnattestedUse"]
    pcr0s = deny["Condition"]["StringNotEqualsIgnoreCase"]["kms:RecipientAttestation:PCR0"]
    assert pcr0s == [old["PCR0"], new["PCR0"]]


@pytest.mark.parametrize(
    ("measurements", "message"),
    [
        ({"PCR0": "0" * 96, "PCR1": pcr(1), "PCR2": pcr(2)}, "all zeros"),
        ({"PCR0": "ab" * 47, "PCR1": pcr(1), "PCR2": pcr(2)}, "96 hex"),
        ({"PCR0": pcr(0), "PCR1": pcr(1)}, "PCR2 is missing"),
        ({"PCR0": pcr(0), "PCR1": pcr(1), "PCR2": pcr(2), "HashAlgorithm": "Sha256"}, "algorithm"),
    ],
    ids=["debug-zeros", "short", "missing", "sha256"],
)
def test_bad_measurements_are_refused(measurements: dict[str, str], message: str) -> None:
    with pytest.raises(kms_policy.MeasurementError, match=message):
        kms_policy.load_pcrs({"Measurements": measurements})


def test_render_refuses_unsafe_inputs() -> None:
    with pytest.raises(kms_policy.MeasurementError, match="not signed"):
        render([image("a", signed=False)])
    assert "kms:RecipientAttestation:PCR8" not in json.dumps(
        render([image("a", signed=False)], require_signed=False)
    )
    with pytest.raises(kms_policy.MeasurementError, match="twice"):
        render([image("a"), image("a")])
    with pytest.raises(kms_policy.MeasurementError, match="at least one"):
        render([])
    with pytest.raises(ValueError, match="12 digits"):
        kms_policy.render_key_policy(
            account_id="1234", host_role="h", admin_role="a", images=[image("a")]
        )
    with pytest.raises(ValueError, match="administrator"):
        kms_policy.render_key_policy(
            account_id="111122223333", host_role="x", admin_role="x", images=[image("a")]
        )


def test_pcrs_command_reads_nitro_cli_output(tmp_path: Path) -> None:
    build = tmp_path / "build.json"
    # The shape of `nitro-cli build-enclave` output (AWS Nitro Enclaves User Guide).
    upper = {k: v.upper() for k, v in image("c").items()}
    build.write_text(json.dumps({"Measurements": {"HashAlgorithm": "Sha384 { ... }", **upper}}))
    eif = tmp_path / "x.eif"
    eif.write_bytes(b"eif bytes")
    script = str(DEPLOY / "kms" / "policy.py")
    proc = subprocess.run(
        [sys.executable, script, "pcrs", str(build), "--commit", "abc", "--eif", str(eif)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["PCR0"] == image("c")["PCR0"] and record["commit"] == "abc"
    assert record["eif_sha256"] == hashlib.sha256(b"eif bytes").hexdigest()
    first = tmp_path / "a.pcrs.json"
    first.write_text(proc.stdout)
    other = tmp_path / "b.pcrs.json"
    other.write_text(json.dumps({**record, "PCR2": pcr(2, "d")}))
    same = [sys.executable, script, "same-pcrs"]
    assert subprocess.run([*same, str(first), str(first)], timeout=30).returncode == 0
    differ = subprocess.run(
        [*same, str(first), str(other)], capture_output=True, text=True, timeout=30
    )
    assert differ.returncode == 1 and "PCR2" in differ.stderr


### Host: systemd units, enclave supervisor, Redis, PostgreSQL


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in {".service", ".target"})


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify checks that ExecStart binaries exist: point them at stubs, keep the rest.
    stub = tmp_path / "stub"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    for unit in unit_files():
        text = re.sub(r"^(ExecStart=)(\S+)", rf"\g<1>{stub}", unit.read_text(), flags=re.M)
        (tmp_path / unit.name).write_text(text)
    # Units we depend on but do not ship (nitro-cli's allocator).
    (tmp_path / "nitro-enclaves-allocator.service").write_text(
        f"[Unit]\nDescription=stand-in\n[Service]\nExecStart={stub}\n"
    )
    names = [unit.name for unit in unit_files()]
    proc = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / n) for n in names)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    ours = [line for line in proc.stderr.splitlines() if any(n in line for n in names)]
    assert ours == [], "\n".join(ours)
    assert proc.returncode == 0, proc.stderr


def test_units_run_as_unprivileged_users_with_hardening() -> None:
    for unit in unit_files():
        text = unit.read_text()
        if unit.suffix != ".service":
            continue
        assert "Restart=always" in text, unit.name
        assert "NoNewPrivileges=yes" in text, unit.name
        assert "WantedBy=shardkeep.target" in text, unit.name
        if unit.name != "shardkeep-enclave.service":  # nitro-cli needs root
            assert re.search(r"^(User=shardkeep|DynamicUser=yes)$", text, re.M), unit.name
            assert "CapabilityBoundingSet=\n" in text, unit.name
    host = (UNITS / "shardkeep-host.service").read_text()
    argv = unit_exec("shardkeep-host.service")
    assert flag(argv, "--api-token-file") == "%d/api-tokens", "tokens are a systemd credential"
    assert "LoadCredential=api-tokens:" in host and "PGPASSFILE=%d/pgpass" in host
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "host" / "env" / "host.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert "sslmode=verify-full" in env["SHARDKEEP_STORE"]
    assert "password" not in env["SHARDKEEP_STORE"].lower()
    # The API listens on loopback only; nginx terminates mutual TLS and forwards to it.
    assert env["SHARDKEEP_HOST_LISTEN"].startswith("127.0.0.1:")
    nginx = (DEPLOY / "host" / "nginx" / "shardkeep-host.conf").read_text()
    assert "ssl_verify_client on;" in nginx
    assert f"grpc_pass grpc://{env['SHARDKEEP_HOST_LISTEN']};" in nginx


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "host.crt").write_bytes(pem)
    (tmp_path / "coordinators-ca.crt").write_bytes(pem)
    (tmp_path / "host.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = (DEPLOY / "host" / "nginx" / "shardkeep-host.conf").read_text()
    server = server.replace("/etc/shardkeep/tls", str(tmp_path))
    server = server.replace("/var/log/nginx", str(tmp_path))
    (tmp_path / "server.conf").write_text(server)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; include {tmp_path}/server.conf; }}\n"
    )
    proc = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_relay_unit_uses_flags_the_relay_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    from relay.main import main as relay_main

    with pytest.raises(SystemExit):
        relay_main(["--help"])
    usage = capsys.readouterr().out
    argv = unit_exec("shardkeep-relay.service")
    for token in argv[1:]:
        if token.startswith("--"):
            assert token in usage, f"shardkeep-relay has no {token}"


def test_relay_reads_its_redis_password_from_a_credential_not_argv_or_env() -> None:
    from relay.main import BACKEND_ENV, backend_spec, make_backend
    from relay.redis_backend import RedisBackend
    from relay.rooms import RelayConfig

    unit = (UNITS / "shardkeep-relay.service").read_text()
    argv = unit_exec("shardkeep-relay.service")
    assert "--backend" not in argv, "a URL with a password on the command line"
    assert flag(argv, "--backend-file") == "%d/relay-backend"
    assert "LoadCredential=relay-backend:/etc/shardkeep/relay-backend" in unit
    env = (DEPLOY / "host" / "env" / "relay.env").read_text()
    assert BACKEND_ENV not in env.replace(f"# {BACKEND_ENV}", "")
    assert "redis" not in env.lower().split("#")[0] and "@" not in env
    # The template parses to the TLS URL of the relay's ACL user.
    example = DEPLOY / "host" / "env" / "relay-backend.example"
    spec = backend_spec(flag=None, file=str(example), environ={})
    assert spec.startswith("rediss://shardkeep-relay:CHANGE-ME@")
    backend = make_backend(spec, redis_prefix="shardkeep:relay:", config=RelayConfig())
    assert isinstance(backend, RedisBackend)
    asyncio.run(backend.aclose())
    readme = (DEPLOY / "README.md").read_text()
    assert "install -m 0600 pgpass api-tokens relay-backend /etc/shardkeep/" in readme


def test_host_unit_fetches_kms_credentials_from_imds() -> None:
    argv = unit_exec("shardkeep-host.service")
    assert flag(argv, "--kms-credentials") == "imds"
    for path in (UNITS / "shardkeep-host.service", DEPLOY / "host" / "env" / "host.env"):
        assert "AWS_SECRET_ACCESS_KEY" not in path.read_text()
    # IMDS is reachable from the unit: an IPv4 socket, no private network.
    unit = (UNITS / "shardkeep-host.service").read_text()
    assert "AF_INET " in unit and "PrivateNetwork=yes" not in unit
    assert "IPAddressDeny" not in unit


def test_host_unit_uses_flags_the_host_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("host.main") is None:
        pytest.skip("host.main (shardkeep-host) is not written yet")
    from host.main import main as host_main  # type: ignore[import-not-found,unused-ignore]

    with pytest.raises(SystemExit):
        host_main(["--help"])
    usage = capsys.readouterr().out
    for token in unit_exec("shardkeep-host.service")[1:]:
        if token.startswith("--"):
            assert token in usage, f"shardkeep-host has no {token}"


### Metrics: every service exposes its endpoint

# Each unit that serves Prometheus metrics, and what its endpoint exports. The
# enclave has no network: its counters are on the host's endpoint.
METRICS_UNITS = {
    "shardkeep-host.service": ("shardkeep_host_", "shardkeep_enclave_"),
    "shardkeep-relay.service": ("shardkeep_relay_",),
    "shardkeep-enclave-bridge.service": ("shardkeep_bridge_",),
}


def unit_environment(unit: str) -> dict[str, str]:
    """The settings of the unit's EnvironmentFile (its template under deploy/host/env)."""
    text = (UNITS / unit).read_text()
    [path] = re.findall(r"^EnvironmentFile=/etc/shardkeep/(\S+)$", text, re.M)
    lines = (DEPLOY / "host" / "env" / path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def expanded_exec(unit: str) -> list[str]:
    """The unit's ExecStart with its ``${VAR}`` settings filled in, as systemd does."""
    env = unit_environment(unit)
    argv = unit_exec(unit)
    for token in argv:
        for name in re.findall(r"\$\{(\w+)\}", token):
            assert name in env, f"{unit}: {name} is not set in its EnvironmentFile"
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], t) for t in argv]


def test_every_service_exposes_metrics_on_its_own_port() -> None:
    readme = (DEPLOY / "README.md").read_text()
    ports: dict[str, int] = {}
    for unit, prefixes in METRICS_UNITS.items():
        argv = expanded_exec(unit)
        port = int(flag(argv, "--metrics-port"))
        address = flag(argv, "--metrics-address")
        assert 1024 < port < 65536, unit
        # Scraped from the monitoring subnet: a wildcard or routable IPv4 address.
        assert not ipaddress.ip_address(address).is_loopback, unit
        [families] = re.findall(r"^RestrictAddressFamilies=(.*)$", (UNITS / unit).read_text(), re.M)
        assert "AF_INET" in families.split(), f"{unit} cannot open its metrics socket"
        # The runbook opens the port to monitoring and shows what it serves.
        assert f":{port} (" in readme, f"the security groups do not admit :{port}"
        for prefix in prefixes:
            assert f"localhost:{port}/metrics | grep {prefix}" in readme, (unit, prefix)
        ports[unit] = port
    assert len(set(ports.values())) == len(ports), f"metrics ports collide: {ports}"
    enclave = (UNITS / "shardkeep-enclave.service").read_text()
    assert "--metrics-port" not in enclave  # no network in the enclave


def test_bridge_unit_uses_flags_the_bridge_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    from shardkeep.bridge import main as bridge_main

    with pytest.raises(SystemExit):
        bridge_main(["--help"])
    usage = capsys.readouterr().out
    argv = unit_exec("shardkeep-enclave-bridge.service")
    for token in argv[3:]:  # after "python -m shardkeep.bridge"
        if token.startswith("--"):
            assert token in usage, f"the bridge has no {token}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape_until(port: int, prefix: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text: str = r.read().decode()
            assert prefix in text
            return text
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("unit", ["shardkeep-relay.service", "shardkeep-enclave-bridge.service"])
def test_units_command_line_serves_metrics(unit: str, sockdir: Path) -> None:
    """Run the unit's own command line (paths, the vsock target, the backend and
    the metrics address moved to this machine) and scrape its endpoint."""
    (sockdir / "relay-backend").write_text("memory\n")
    admission = {"max_rooms": 10, "max_bytes": 1 << 20, "coordinators": []}
    (sockdir / "relay-admission.json").write_text(json.dumps(admission))
    port = free_port()
    local = {
        "%d": str(sockdir),
        "/etc/shardkeep": str(sockdir),
        "/run/shardkeep-enclave": str(sockdir),
        "vsock:16:5000": f"unix:{sockdir}/enclave.sock",
    }
    argv = []
    for token in expanded_exec(unit):
        for old, new in local.items():
            token = token.replace(old, new)
        argv.append(token)
    argv[argv.index("--metrics-address") + 1] = "127.0.0.1"
    argv[argv.index("--metrics-port") + 1] = str(port)
    if unit == "shardkeep-relay.service":
        argv[argv.index("--listen") + 1] = f"unix:{sockdir}/relay.sock"
        argv[0:1] = [sys.executable, "-m", "relay.main"]
    else:
        argv[0] = sys.executable
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for prefix in METRICS_UNITS[unit]:
            scrape_until(port, prefix)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()[-2000:]


FAKE_NITRO_CLI = textwrap.dedent(
    """\
    #!{python}
    # A stand-in for nitro-cli: state in $FAKE_NITRO_STATE, one call per line in its log.
    import json, os, sys
    path = os.environ["FAKE_NITRO_STATE"]
    state = json.load(open(path))
    state["calls"].append(sys.argv[1:])
    command = sys.argv[1]
    if command == "run-enclave":
        state["running"] = True
        out = {{"EnclaveName": "shardkeep", "EnclaveID": "i-1-enc-2", "EnclaveCID": 16}}
    elif command == "describe-enclaves":
        state["describes"] += 1
        alive = state["running"] and state["describes"] <= state["die_after"]
        flags = state.get("flags", "NONE")
        out = [{{"EnclaveName": "shardkeep", "EnclaveID": "i-1-enc-2", "State": "RUNNING",
                 "Flags": flags}}] if alive else []
        if state.get("leftover") and state["describes"] == 1:
            out = [{{"EnclaveName": "shardkeep", "EnclaveID": "i-0-old", "State": "RUNNING"}}]
    elif command == "terminate-enclave":
        state["running"] = False
        out = {{"Terminated": True}}
    # Atomic replace: the test reads the state while the supervisor calls us.
    with open(path + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(path + ".tmp", path)
    print(json.dumps(out))
    """
)


class FakeNitro:
    def __init__(self, tmp_path: Path, **state: Any) -> None:
        self.state_file = tmp_path / "state.json"
        self.state_file.write_text(
            json.dumps({"calls": [], "running": False, "describes": 0, "die_after": 10**6, **state})
        )
        self.cli = tmp_path / "nitro-cli"
        self.cli.write_text(FAKE_NITRO_CLI.format(python=sys.executable))
        self.cli.chmod(0o755)
        self.config = tmp_path / "run-enclave.json"
        self.config.write_text((DEPLOY / "enclave" / "run-enclave.json").read_text())
        self.env = {**os.environ, "FAKE_NITRO_STATE": str(self.state_file)}

    def argv(self) -> list[str]:
        script = str(DEPLOY / "host" / "enclave_supervise.py")
        return [sys.executable, script, "--config", str(self.config),
                "--nitro-cli", str(self.cli), "--interval", "0.05"]  # fmt: skip

    def calls(self) -> list[list[str]]:
        calls: list[list[str]] = json.loads(self.state_file.read_text())["calls"]
        return calls


def test_supervisor_exits_non_zero_when_the_enclave_stops(tmp_path: Path) -> None:
    fake = FakeNitro(tmp_path, die_after=4, leftover=True)
    proc = subprocess.run(fake.argv(), env=fake.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "is gone" in proc.stderr
    calls = fake.calls()
    assert calls[1] == ["terminate-enclave", "--enclave-id", "i-0-old"], "leftover cleaned up"
    assert calls[2] == ["run-enclave", "--config", str(fake.config)]
    assert sum(c[0] == "describe-enclaves" for c in calls) >= 3


def test_supervisor_terminates_the_enclave_on_sigterm(tmp_path: Path) -> None:
    fake = FakeNitro(tmp_path)
    proc = subprocess.Popen(fake.argv(), env=fake.env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(c[0] == "run-enclave" for c in fake.calls()):
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert fake.calls()[-1] == ["terminate-enclave", "--enclave-id", "i-1-enc-2"]


@pytest.mark.parametrize(
    ("setting", "state", "message"),
    [
        ({"debug_mode": True}, {}, "debug_mode must be false"),
        ({}, {"flags": "DEBUG_MODE"}, "debug mode"),
    ],
    ids=["configured", "reported"],
)
def test_supervisor_refuses_debug_mode(
    tmp_path: Path, setting: dict[str, Any], state: dict[str, Any], message: str
) -> None:
    fake = FakeNitro(tmp_path, **state)
    fake.config.write_text(json.dumps({**json.loads(fake.config.read_text()), **setting}))
    proc = subprocess.run(fake.argv(), env=fake.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and message in proc.stderr
    if setting:
        assert not any(c[0] == "run-enclave" for c in fake.calls())


def test_redis_config_runs_the_relay_under_its_acl(sockdir: Path) -> None:
    server_binary = shutil.which("redis-server")
    if server_binary is None:
        pytest.skip("redis-server is not installed")
    import redis

    from relay.main import backend_spec
    from relay.redis_backend import RedisBackend
    from tests.relay_harness import relay

    acl = sockdir / "users.acl"
    acl.write_text((DEPLOY / "host" / "redis" / "users.acl").read_text())
    password = re.search(r"shardkeep-relay on >(\S+)", acl.read_text())
    assert password
    sock = sockdir / "redis.sock"
    # The shipped file as is; only what this machine cannot have is overridden
    # (the VPC address, TLS certificates, /etc paths).
    server = subprocess.Popen(
        [server_binary, str(DEPLOY / "host" / "redis" / "shardkeep-relay.conf"),
         "--bind", "127.0.0.1", "--port", "0", "--tls-port", "0", "--unixsocket", str(sock),
         "--aclfile", str(acl), "--dir", str(sockdir), "--daemonize", "no"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        # As shipped: the URL in a credential file the relay reads (--backend-file).
        backend_file = sockdir / "relay-backend"
        backend_file.write_text(
            "# the relay's Redis\n" + f"unix://shardkeep-relay:{password.group(1)}@{sock}?db=0\n"
        )
        url = backend_spec(flag=None, file=str(backend_file), environ={})
        direct = redis.Redis.from_url(url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            direct.set("not-the-relay:key", "x")
        with pytest.raises(redis.exceptions.ResponseError):
            direct.flushall()
        with socket.socket(socket.AF_UNIX) as anonymous:  # the default user is off
            anonymous.settimeout(5)
            anonymous.connect(str(sock))
            anonymous.sendall(b"PING\r\n")
            assert anonymous.recv(100).startswith(b"-NOAUTH")
        direct.close()

        async def exchange() -> None:
            async with relay(RedisBackend.from_url(url, prefix="shardkeep:relay:")) as client:
                room = await client.create_room(["a", "b"])
                tokens = room.join_tokens
                async with (
                    client.join(room.room_id, "a", tokens["a"]) as a,
                    client.join(room.room_id, "b", tokens["b"]) as b,
                ):
                    await a.send(b"hello b", ceremony_id="dkg", round_=1, recipient="b")
                    delivered = await asyncio.wait_for(b.receive(), 10)
                    assert delivered.envelope.payload == b"hello b"

        asyncio.run(exchange())
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_postgresql_config_names_real_parameters() -> None:
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not binaries:
        pytest.skip("the PostgreSQL server binary is not installed")
    described = subprocess.run(
        [str(binaries[-1]), "--describe-config"], capture_output=True, text=True, timeout=30
    )
    assert described.returncode == 0, described.stderr
    types = {line.split("\t")[0]: line.split("\t")[3] for line in described.stdout.splitlines()}
    settings = {}
    for raw in (DEPLOY / "host" / "postgresql" / "shardkeep.conf").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    assert settings
    for name, value in settings.items():
        assert name in types, f"unknown PostgreSQL parameter {name}"
        if types[name] == "BOOLEAN":
            assert value in {"on", "off"}, f"{name} = {value}"
    assert settings["ssl"] == "on" and settings["password_encryption"] == "'scram-sha-256'"


def test_pg_hba_accepts_only_tls_with_scram() -> None:
    rules = [
        line.split()
        for line in (DEPLOY / "host" / "postgresql" / "pg_hba.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules
    for rule in rules:
        kind, method = rule[0], rule[-1]
        assert kind in {"local", "hostssl", "host"}
        if kind == "host":
            assert method == "reject", "plain-TCP lines may only reject"
        if kind == "hostssl":
            assert method == "scram-sha-256"
    assert rules[-1][-1] == "reject"
