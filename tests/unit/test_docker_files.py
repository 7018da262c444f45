"""The docker/ files, checked by reading them: no Docker engine needed.

compose.yaml is parsed with PyYAML; the Dockerfile with a small instruction parser; every
`flowkit ...` command they (and docker/README.md) run is resolved against the real click CLI.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from flowkit.cli import main
from flowkit.loading.loader import load_folder

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = DOCKER / "README.md"

FLOWKIT_SERVICES = ("migrate", "scheduler", "worker", "flower")
FLOWKIT_VARS = ("FLOWKIT_DATABASE_URL", "FLOWKIT_BROKER_URL", "FLOWKIT_DAGS_FOLDER")


# -- helpers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]  # type: ignore[no-any-return]


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _resolve(argv: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """Split `flowkit a b --opt x` into the subcommand path, its click command and its args."""
    assert argv and argv[0] == "flowkit", f"not a flowkit command: {argv}"
    cmd: click.Command = main
    path: list[str] = []
    rest = argv[1:]
    ctx = click.Context(main)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"`flowkit {' '.join(path + [rest[0]])}` is not a flowkit command"
        path.append(rest[0])
        cmd, rest = sub, rest[1:]
    assert path, f"no subcommand in {argv}"
    assert not isinstance(cmd, click.Group), f"`flowkit {' '.join(path)}` needs a subcommand"
    return path, cmd, rest


def _assert_real_command(argv: list[str], env: dict[str, str]) -> None:
    path, cmd, rest = _resolve(argv)
    # The subcommand exists and starts up under the service's settings...
    result = CliRunner(env=env).invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert cmd.help and cmd.help.split("\n")[0] in " ".join(result.output.split())
    # ...and its options parse and convert (e.g. `-c 2` is an int in range), without running it.
    with cmd.make_context(" ".join(path), list(rest)) as ctx:
        assert not ctx.args, f"unexpected arguments {ctx.args} for `flowkit {' '.join(path)}`"


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    assert not pending, "Dockerfile ends with a line continuation"
    return out


def _exec_form(args: str) -> list[str]:
    return yaml.safe_load(args) if args.startswith("[") else shlex.split(args)


def _index(instrs: list[tuple[str, str]], pred: Any) -> int:
    hits = [i for i, ins in enumerate(instrs) if pred(*ins)]
    assert hits, "instruction not found"
    return hits[0]


def _pip_install_index(instrs: list[tuple[str, str]]) -> int:
    return _index(instrs, lambda i, a: i == "RUN" and "pip install" in a)


def _dockerignore() -> list[str]:
    return [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _ignored(name: str, patterns: list[str]) -> bool:
    """Docker's rule for a top-level entry: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        for candidate in (pat, pat.removeprefix("**/")):
            if fnmatch.fnmatchcase(name, candidate):
                ignored = not negate
    return ignored


# -- compose.yaml -----------------------------------------------------------------------
def test_flowkit_services_share_one_build_image_and_env_block(services: dict[str, Any]) -> None:
    assert set(FLOWKIT_SERVICES) <= set(services)
    first = services[FLOWKIT_SERVICES[0]]
    assert first.get("build"), "flowkit services must build the image"
    for name in FLOWKIT_SERVICES:
        svc = services[name]
        assert svc.get("build") == first["build"], name
        assert svc.get("image") == first.get("image"), name
        # One YAML anchor, not four copies that can drift: PyYAML gives aliases one object.
        if name == "flower":  # the shared block merged in (<<), plus its basic-auth users
            extra = {k: v for k, v in svc["environment"].items() if k not in first["environment"]}
            assert svc["environment"].items() >= first["environment"].items() and set(extra) == {
                "FLOWKIT_FLOWER_BASIC_AUTH"
            }, svc["environment"]
            continue
        assert svc.get("environment") is first["environment"], f"{name} has its own env block"
        assert _argv(svc["command"])[0] == "flowkit", name


def test_build_context_is_the_repo_root_with_docker_dockerfile(services: dict[str, Any]) -> None:
    build = services["scheduler"]["build"]
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert (context / "pyproject.toml").is_file()


def test_env_sets_the_three_flowkit_vars_consistently(services: dict[str, Any]) -> None:
    env = _env(services["scheduler"])
    assert all(env.get(var) for var in FLOWKIT_VARS), env

    db = make_url(env["FLOWKIT_DATABASE_URL"])
    pg = _env(services["postgres"])
    assert db.get_backend_name() == "postgresql" and db.get_driver_name() == "psycopg"
    assert db.host in services and (db.port or 5432) == 5432
    assert (db.username, db.password, db.database) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])

    broker = env["FLOWKIT_BROKER_URL"]
    match = re.fullmatch(r"redis://([^:/@]+)(?::(\d+))?/\d+", broker)
    assert match and match.group(1) == "redis" and match.group(1) in services, broker
    assert services[match.group(1)]["image"].startswith("redis")


def test_dags_mounted_read_only_where_flowkit_looks(services: dict[str, Any]) -> None:
    dags_folder = _env(services["scheduler"])["FLOWKIT_DAGS_FOLDER"]
    for name in ("scheduler", "worker"):
        mounts = [str(v).split(":") for v in services[name].get("volumes", [])]
        dags = [m for m in mounts if len(m) >= 2 and m[1] == dags_folder]
        assert dags, f"{name} does not mount a dags folder at {dags_folder}"
        source, _, *opts = dags[0]
        assert "ro" in ",".join(opts).split(","), f"{name}: dags mount is not read-only"
        assert (COMPOSE_FILE.parent / source).resolve() == ROOT / "dags"


def test_scheduler_and_worker_wait_for_migrate_and_healthy_redis(services: dict[str, Any]) -> None:
    for name in ("scheduler", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert services[name].get("restart") == "unless-stopped", name
    migrate = services["migrate"]
    assert _argv(migrate["command"])[1:] == ["db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    # A restarting one-shot never "completes successfully" for its dependents.
    assert migrate.get("restart", "no") in ("no", False)


def test_every_dependency_names_a_defined_service(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in services, f"{name} depends on undefined service {dep!r}"


def test_postgres_and_redis_have_real_healthchecks(compose: dict[str, Any], services: dict[str, Any]) -> None:
    pg, redis = services["postgres"], services["redis"]
    assert pg["image"].split(":")[0] == "postgres" and redis["image"].split(":")[0] == "redis"
    pg_test = " ".join(_argv(pg["healthcheck"]["test"]))
    assert "pg_isready" in pg_test and f"-U {_env(pg)['POSTGRES_USER']}" in pg_test
    assert "redis-cli" in " ".join(_argv(redis["healthcheck"]["test"]))
    assert "ping" in " ".join(_argv(redis["healthcheck"]["test"]))

    volume = pg["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data"
    assert volume[0] in (compose.get("volumes") or {}), "postgres data volume is not declared"


def test_workers_replicated_and_flower_published(services: dict[str, Any]) -> None:
    assert services["worker"]["deploy"]["replicas"] == 2
    assert _argv(services["worker"]["command"])[1:] == ["worker", "-c", "2"]
    flower_port = _argv(services["flower"]["command"])
    assert flower_port[flower_port.index("--port") + 1] == "5555"
    published = [str(p).split(":")[-2:] for p in services["flower"]["ports"]]
    assert ["5555", "5555"] in published


def test_flower_listens_for_the_published_port_behind_basic_auth_from_the_environment(
    services: dict[str, Any],
) -> None:
    """Flower's users come from the operator's environment (compose refuses to start without
    them), never a password written in the file; and `flowkit flower` accepts the address."""
    flower = services["flower"]
    argv = _argv(flower["command"])
    assert argv[argv.index("--address") + 1] == "0.0.0.0"  # inside the container: for the published port
    auth = _env(flower)["FLOWKIT_FLOWER_BASIC_AUTH"]
    assert re.fullmatch(r"\$\{FLOWKIT_FLOWER_BASIC_AUTH:\?[^}]+\}", auth), auth
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"])
    # and without the users, `flowkit flower` on that address refuses to start, in one line
    env = {k: v for k, v in _env(flower).items() if k != "FLOWKIT_FLOWER_BASIC_AUTH"}
    result = CliRunner(env={**env, "FLOWKIT_FLOWER_BASIC_AUTH": ""}).invoke(main, argv[1:])
    assert result.exit_code == 1
    assert result.output.startswith("error: flowkit flower --address '0.0.0.0'") and "FLOWKIT_FLOWER_BASIC_AUTH=" in (
        result.output
    )


@pytest.mark.parametrize("name", FLOWKIT_SERVICES)
def test_service_command_is_a_real_flowkit_subcommand(services: dict[str, Any], name: str) -> None:
    _assert_real_command(_argv(services[name]["command"]), _env(services[name]))


# -- docker/README.md -------------------------------------------------------------------
def test_readme_commands_run_real_subcommands_on_real_services(services: dict[str, Any]) -> None:
    text = README.read_text()
    assert "docker compose -f docker/compose.yaml up --build" in text
    assert "http://localhost:5555" in text
    execs = re.findall(r"docker compose -f docker/compose\.yaml exec (\S+) (flowkit [^\n`]*)", text)
    assert any(cmd.startswith("flowkit trigger orders") for _, cmd in execs), execs
    for service, command in execs:
        assert service in services, service
        _assert_real_command(shlex.split(command), _env(services[service]))
    for scaled in re.findall(r"--scale (\w+)=\d+", text):
        assert scaled in services and scaled != "migrate"  # a one-shot


def test_the_scheduler_comment_matches_high_availability_on_postgresql(services: dict[str, Any]) -> None:
    """PostgreSQL runs several schedulers (one active, the others standing by): nothing in
    the compose files may say there must be exactly one."""
    assert "postgresql" in _env(services["scheduler"])["FLOWKIT_DATABASE_URL"]
    compose = COMPOSE_FILE.read_text()
    comment = compose[: compose.index("\n  scheduler:")].rsplit("\n\n", 1)[-1]
    assert "stand by" in comment and "active" in comment
    for text in (compose, README.read_text()):
        assert "exactly one scheduler" not in text.lower() and "exactly one `scheduler`" not in text


def test_readme_flow_exists_in_the_mounted_dags_folder() -> None:
    report = load_folder(ROOT / "dags", timeout=30)
    assert "orders" in report.flows, [str(e) for e in report.errors]


# -- Dockerfile -------------------------------------------------------------------------
def test_dockerfile_base_workdir_env_and_default_command(services: dict[str, Any]) -> None:
    instrs = _dockerfile()
    assert instrs[0] == ("FROM", "python:3.11-slim")
    assert ("WORKDIR", "/opt/flowkit") in instrs
    env = " ".join(a for i, a in instrs if i == "ENV")
    dags_folder = _env(services["scheduler"])["FLOWKIT_DAGS_FOLDER"]
    assert re.search(rf"\bFLOWKIT_DAGS_FOLDER[= ]{re.escape(dags_folder)}\b", env)
    cmd = [a for i, a in instrs if i == "CMD"]
    assert cmd and _exec_form(cmd[-1]) == ["flowkit", "--help"]
    assert CliRunner().invoke(main, ["--help"]).exit_code == 0


def test_dockerfile_installs_graphviz_lean() -> None:
    runs = [a for i, a in _dockerfile() if i == "RUN" and "apt-get install" in a]
    assert len(runs) == 1
    run = runs[0]
    assert "apt-get update" in run and re.search(r"\bgraphviz\b", run)
    assert "--no-install-recommends" in run and "-y" in run.split()
    # Cleaned in the same layer, or the package lists stay in the image.
    assert "rm -rf /var/lib/apt/lists/*" in run


def test_dockerfile_runs_as_a_created_non_root_user() -> None:
    instrs = _dockerfile()
    users = [(n, a) for n, (i, a) in enumerate(instrs) if i == "USER"]
    assert users, "no USER instruction: the container would run as root"
    at, user = users[-1]
    name = user.split(":")[0]
    assert name not in ("root", "0")
    created = [a for i, a in instrs[:at] if i == "RUN" and re.search(r"\b(useradd|adduser)\b", a)]
    # useradd/adduser take the login name last.
    assert any(a.split()[-1] == name for a in created), f"USER {name} is never created"
    assert at > _pip_install_index(instrs), "switch user after installing into site-packages"


def test_dockerfile_pip_install_target_has_the_project() -> None:
    instrs = _dockerfile()
    pip_at = _pip_install_index(instrs)
    pip_args = shlex.split(instrs[pip_at][1].split("&&")[0])
    assert "--no-cache-dir" in pip_args
    target = pip_args[-1]
    match = re.fullmatch(r"\.\[([\w,-]+)\]", target)
    assert match, f"pip installs {target!r}, not the project in WORKDIR"

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert set(match.group(1).split(",")) <= set(extras) and "flower" in match.group(1)

    workdirs = [a for i, a in instrs[:pip_at] if i == "WORKDIR"]
    assert workdirs and workdirs[-1] == "/opt/flowkit"
    copied: set[str] = set()
    for instr, args in instrs[:pip_at]:
        if instr == "COPY":
            srcs = [s for s in shlex.split(args) if not s.startswith("--")][:-1]
            copied |= {PurePosixPath(s).parts[0] for s in srcs}
    assert (ROOT / "pyproject.toml").is_file() and ("pyproject.toml" in copied or "." in copied)
    # setuptools finds these packages; if they are not in the context yet, pip installs nothing.
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    for package in packages:
        assert (ROOT / package / "__init__.py").is_file()
        assert package in copied or "." in copied, f"{package}/ is copied after pip install"


def test_dockerfile_copies_dags_to_the_dags_folder() -> None:
    instrs = _dockerfile()
    copies = [shlex.split(a) for i, a in instrs if i == "COPY"]
    assert any(
        c[0].rstrip("/") == "dags" and c[-1].rstrip("/") in ("dags", "/opt/flowkit/dags") for c in copies
    ) or any(c[0] == "." for c in copies)
    assert (ROOT / "dags").is_dir()


# -- .dockerignore ----------------------------------------------------------------------
def test_dockerignore_drops_local_state_but_keeps_the_project() -> None:
    patterns = _dockerignore()
    for junk in (".venv", ".git", ".flowkit", "__pycache__", ".pytest_cache", "flowkit.egg-info"):
        assert _ignored(junk, patterns), f"{junk} would be sent to the build"
    for needed in ("pyproject.toml", "README.md", "flowkit", "workers", "dags"):
        assert not _ignored(needed, patterns), f"{needed} is excluded but the build needs it"
