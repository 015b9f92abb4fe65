"""The Docker setup (docker/compose.yml, docker/Dockerfile.client), checked by parsing: no Docker engine is needed.

:func:`compose_problems` and :func:`dockerfile_problems` list every way the files break what docker/README.md promises
(GPU and Vulkan for the server, the health check the client waits on, the client's address of the server, the CPU
torch installed before the project, CARLA's ``agents`` on the import path, ...). The real files must give no problem,
and each mutated copy must give the problem it introduces, so the validators can fail.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yml"
DOCKERFILE = DOCKER / "Dockerfile.client"
README = DOCKER / "README.md"
SERVER, CLIENT = "carla-server", "digr-client"
CARLA_IMAGE = "carlasim/carla:0.9.16"
WEB_PORT = 8080


# ------------------------------------------------------------------------------------------------------------ compose


def _env(service: dict) -> dict[str, str]:
    """A service's ``environment`` as a mapping (Compose accepts a mapping or a list of ``KEY=VALUE``)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _cmd(value) -> list[str]:
    """A ``command`` or ``test`` as a list of words (Compose accepts a list or a shell-like string)."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else shlex.split(str(value))


def _seconds(duration) -> float:
    """A Compose duration (``90s``, ``1m30s``, ``500ms``) in seconds; 0 for anything else."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", str(duration or ""))
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _published(service: dict) -> set[int]:
    """Container ports a service publishes (short ``[host:]from[-to]:container[-to][/proto]`` or long syntax)."""
    out: set[int] = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.add(int(port["target"]))
            continue
        container = str(port).split("/")[0].rsplit(":", 1)[-1]
        lo, _, hi = container.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _inside(path: Path, root: Path) -> bool:
    return path.resolve() == root.resolve() or root.resolve() in path.resolve().parents


def _bind_sources(service: dict) -> list[str]:
    """Host paths of a service's bind mounts (named volumes left out)."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                out.append(str(vol["source"]))
        else:
            src = str(vol).split(":", 1)[0]
            if src.startswith((".", "/", "~")):
                out.append(src)
    return out


def _client_config_arg(command: list[str]) -> str | None:
    """The config file named by ``digr drive CONFIG ...``: the first word after ``drive`` that is not a flag."""
    if command[:2] != ["digr", "drive"]:
        return None
    return next((w for w in command[2:] if not w.startswith("-")), None)


def compose_problems(compose: dict, compose_dir: Path = DOCKER, repo: Path = REPO) -> list[str]:
    """Everything in a loaded compose.yml that breaks the setup docker/README.md describes; [] when it is sound."""
    problems: list[str] = []
    services = compose.get("services") or {}
    for name in (SERVER, CLIENT):
        if name not in services:
            problems.append(f"service {name!r} is missing")
    if problems:
        return problems
    server, client = services[SERVER], services[CLIENT]

    # the server: the pinned image, headless rendering, the GPU with its graphics driver, ports, a health check
    if server.get("image") != CARLA_IMAGE:
        problems.append(f"server image is {server.get('image')!r}, not {CARLA_IMAGE!r}")
    command = _cmd(server.get("command"))
    if "CarlaUE4.sh" not in " ".join(command):
        problems.append("server command does not start CarlaUE4.sh")
    if "-RenderOffScreen" not in command:
        problems.append("server command lacks -RenderOffScreen (headless rendering)")
    rpc = next((w.split("=", 1)[1] for w in command if w.startswith("-carla-rpc-port=")), "2000")
    if rpc != "2000":
        problems.append(f"server RPC port is {rpc}, the health check and the client use 2000")
    env = _env(server)
    if env.get("NVIDIA_DRIVER_CAPABILITIES") != "all":
        problems.append("server NVIDIA_DRIVER_CAPABILITIES is not 'all' (Vulkan needs the graphics capability)")
    if "NVIDIA_VISIBLE_DEVICES" not in env:
        problems.append("server NVIDIA_VISIBLE_DEVICES is not set")
    devices = (((server.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    gpus = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or [])]
    if not gpus:
        problems.append("server has no GPU reservation (deploy.resources.reservations.devices: driver nvidia, [gpu])")
    elif not any(d.get("count") == "all" or isinstance(d.get("count"), int) or d.get("device_ids") for d in gpus):
        problems.append("server GPU reservation names neither a count nor device_ids")
    if server.get("network_mode") != "host" and not {2000, 2001, 2002} <= _published(server):
        problems.append("server publishes neither ports 2000-2002 nor uses network_mode host")
    health = server.get("healthcheck") or {}
    test = " ".join(_cmd(health.get("test")))
    if "/dev/tcp/localhost/2000" not in test and "/dev/tcp/127.0.0.1/2000" not in test:
        problems.append(f"server health check does not test TCP port 2000 (test: {test!r})")
    if _seconds(health.get("start_period")) < 30:
        problems.append("server health check has no start_period of at least 30 s (the server takes tens of seconds)")
    for key in ("interval", "timeout"):
        if _seconds(health.get(key)) <= 0:
            problems.append(f"server health check has no {key}")
    if not isinstance(health.get("retries"), int) or health["retries"] < 1:
        problems.append("server health check has no retries")

    # the client: built from the repository, waits for a healthy server, finds it by name, serves the web view
    build = client.get("build") or {}
    context = compose_dir / str(build.get("context", "."))
    if not _inside(context, repo) or context.resolve() != repo.resolve():
        problems.append(f"client build context {build.get('context')!r} is not the repository root")
    dockerfile = context / str(build.get("dockerfile", "Dockerfile"))
    if not dockerfile.is_file() or not _inside(dockerfile, repo):
        problems.append(f"client dockerfile {build.get('dockerfile')!r} does not exist under the build context")
    depends = client.get("depends_on") or {}
    condition = depends.get(SERVER, {}).get("condition") if isinstance(depends, dict) else None
    if condition != "service_healthy":
        problems.append(f"client does not depend on {SERVER} with condition service_healthy")
    cenv = _env(client)
    if cenv.get("CARLA_HOST") != SERVER:
        problems.append(f"client CARLA_HOST is {cenv.get('CARLA_HOST')!r}, not the server's service name {SERVER!r}")
    if cenv.get("CARLA_PORT") != "2000":
        problems.append(f"client CARLA_PORT is {cenv.get('CARLA_PORT')!r}, not 2000")
    if WEB_PORT not in _published(client):
        problems.append(f"client does not publish port {WEB_PORT} (the web view)")
    ccmd = _cmd(client.get("command"))
    if ccmd[:2] != ["digr", "drive"]:
        problems.append(f"client command does not start with `digr drive`: {ccmd}")
    else:
        config = _client_config_arg(ccmd)
        if not config or not config.startswith("experiments/"):
            problems.append(f"client command names no config under experiments/: {ccmd}")
        flag = lambda name: ccmd[ccmd.index(name) + 1] if name in ccmd[:-1] else None
        if flag("--serve") != str(WEB_PORT):
            problems.append(f"client command does not serve the web view on {WEB_PORT}")
        if flag("--host") != "0.0.0.0":
            problems.append("client command does not pass --host 0.0.0.0 (127.0.0.1 is unreachable from the host)")
    # The address must not enter the config: every stage records env.kwargs, and `digr drive` refuses a run folder
    # whose recorded env.kwargs differ (host None -> 'carla-server' is a change). CARLA_HOST/CARLA_PORT carry it.
    if any(re.match(r"env\.(eval_)?kwargs\.(host|port)=", w) for w in ccmd):
        problems.append("client command overrides env.kwargs.host/port; use CARLA_HOST/CARLA_PORT instead")
    if client.get("stop_signal") != "SIGINT":
        problems.append("client stop_signal is not SIGINT (digr restores the server's asynchronous mode on Ctrl-C)")
    for name, service in ((SERVER, server), (CLIENT, client)):
        for src in _bind_sources(service):
            if not _inside(compose_dir / src, repo):
                problems.append(f"{name} bind mount {src!r} resolves outside the repository")
    if "../runs:/app/runs" not in [str(v) for v in client.get("volumes") or []]:
        problems.append("client does not mount ../runs at /app/runs (run folders would be lost with the container)")
    return problems


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_sound(compose):
    assert compose_problems(compose) == []


def _set(path: str, value):
    """A mutation: set the dotted ``path`` (``services.carla-server.image``) of a compose dict; None deletes it."""

    def apply(d: dict) -> None:
        *keys, last = path.split(".")
        for k in keys:
            d = d[int(k)] if isinstance(d, list) else d[k]
        if value is None:
            del d[last]
        else:
            d[last] = value

    return apply


MUTATIONS = [
    (_set("services.carla-server", None), "service 'carla-server' is missing"),
    (_set("services.carla-server.image", "carlasim/carla:0.9.15"), "server image"),
    (_set("services.carla-server.image", "carlasim/carla:latest"), "server image"),
    (_set("services.carla-server.command", ["bash", "CarlaUE4.sh", "-nosound"]), "-RenderOffScreen"),
    (_set("services.carla-server.command", "bash CarlaUE4.sh -RenderOffScreen -carla-rpc-port=3000"), "RPC port"),
    (_set("services.carla-server.environment.NVIDIA_DRIVER_CAPABILITIES", "compute,utility"), "Vulkan"),
    (_set("services.carla-server.deploy", None), "no GPU reservation"),
    (_set("services.carla-server.deploy.resources.reservations.devices.0.driver", "amd"), "no GPU reservation"),
    (_set("services.carla-server.deploy.resources.reservations.devices.0.capabilities", ["compute"]), "no GPU reservation"),
    (_set("services.carla-server.ports", ["2000:2000"]), "ports 2000-2002"),
    (_set("services.carla-server.healthcheck.test", ["CMD", "bash", "-c", "</dev/tcp/localhost/8080"]), "port 2000"),
    (_set("services.carla-server.healthcheck.start_period", None), "start_period"),
    (_set("services.carla-server.healthcheck.start_period", "5s"), "start_period"),
    (_set("services.carla-server.healthcheck.retries", None), "retries"),
    (_set("services.digr-client.build.context", "."), "build context"),
    (_set("services.digr-client.build.dockerfile", "docker/Dockerfile"), "dockerfile"),
    (_set("services.digr-client.depends_on", [SERVER]), "service_healthy"),
    (_set("services.digr-client.depends_on", {SERVER: {"condition": "service_started"}}), "service_healthy"),
    (_set("services.digr-client.environment", ["CARLA_HOST=localhost", "CARLA_PORT=2000"]), "CARLA_HOST"),
    (_set("services.digr-client.environment.CARLA_PORT", "3000"), "CARLA_PORT"),
    (_set("services.digr-client.ports", ["8000:8000"]), "port 8080"),
    (_set("services.digr-client.command", "digr run experiments/carla.yaml"), "`digr drive`"),
    (_set("services.digr-client.command", "digr drive /tmp/carla.yaml --serve 8080 --host 0.0.0.0"), "under experiments/"),
    (_set("services.digr-client.command", "digr drive experiments/carla.yaml --serve 8000 --host 0.0.0.0"), "web view on"),
    (_set("services.digr-client.command", "digr drive experiments/carla.yaml --serve 8080"), "--host 0.0.0.0"),
    (
        _set(
            "services.digr-client.command",
            "digr drive experiments/carla.yaml --serve 8080 --host 0.0.0.0 -o env.kwargs.host=x",
        ),
        "overrides env.kwargs.host",
    ),
    (_set("services.digr-client.stop_signal", None), "SIGINT"),
    (_set("services.digr-client.volumes", ["../../runs:/app/runs"]), "outside the repository"),
    (_set("services.digr-client.volumes", []), "../runs at /app/runs"),
]


@pytest.mark.parametrize("mutate, expected", MUTATIONS, ids=[m[1] + f"-{i}" for i, m in enumerate(MUTATIONS)])
def test_compose_validator_catches(compose, mutate, expected):
    broken = copy.deepcopy(compose)
    mutate(broken)
    problems = compose_problems(broken)
    assert any(expected in p for p in problems), f"no problem mentions {expected!r}: {problems}"


def test_server_image_matches_the_carla_extra(compose):
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
    if "carla" not in extras:
        pytest.skip("pyproject.toml has no `carla` extra yet (carla==0.9.16 is to be added there)")
    pins = [re.fullmatch(r"\s*carla\s*==\s*([\w.]+)\s*", req) for req in extras["carla"]]
    versions = [m.group(1) for m in pins if m]
    assert versions, f"the carla extra pins no exact carla version: {extras['carla']}"
    tag = compose["services"][SERVER]["image"].rsplit(":", 1)[1]
    assert versions == [tag], f"server image carlasim/carla:{tag} but the wheel is carla=={versions[0]}"


def test_client_command_names_an_existing_valid_config(compose):
    config = _client_config_arg(_cmd(compose["services"][CLIENT]["command"]))
    assert config, "the client command names no config"
    path = REPO / config
    assert path.is_file(), f"the client's default command drives {config}, which does not exist in the repository"
    from digr.running.config import load_config

    cfg = load_config(path)  # raises ConfigError naming the field if it is invalid
    for field in ("kwargs", "eval_kwargs"):
        pinned = {"host", "port"} & set(getattr(cfg.env, field) or {})
        assert not pinned, (
            f"{config} sets env.{field} {sorted(pinned)}: the client's CARLA_HOST/CARLA_PORT would be ignored; "
            "leave the server's address out of the config"
        )


def test_readme_gives_the_two_commands(compose):
    text = README.read_text()
    config = _client_config_arg(_cmd(compose["services"][CLIENT]["command"]))
    for command in (
        f"docker compose -f docker/compose.yml run --rm digr-client digr run {config}",
        "docker compose -f docker/compose.yml up",
        f"http://localhost:{WEB_PORT}/",
    ):
        assert command in text, f"docker/README.md lacks {command!r}"
    assert "What has been run" in text


# --------------------------------------------------------------------------------------------------------- Dockerfile


def parse_dockerfile(text: str) -> list[dict]:
    """Stages of a Dockerfile: ``{"image", "name", "instructions": [(INSTRUCTION, arguments), ...]}``.

    Comment lines (also inside continued lines, as Docker allows) are dropped and ``\\``-continued lines joined.
    """
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        buffer += line
        if buffer.strip():
            word, _, args = buffer.strip().partition(" ")
            instructions.append((word.upper(), args.strip()))
        buffer = ""
    stages: list[dict] = []
    for word, args in instructions:
        if word == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"image": parts[0], "name": name, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((word, args))
    return stages


def _flags_and_words(args: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(args)
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)
    return flags, [w for w in words if not w.startswith("--")]


def _exec_form(args: str) -> list[str]:
    try:
        value = json.loads(args)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def dockerfile_problems(text: str, repo: Path = REPO) -> list[str]:
    """Everything in Dockerfile.client that breaks the client image docker/README.md describes; [] when sound."""
    problems: list[str] = []
    stages = parse_dockerfile(text)
    if not stages:
        return ["no FROM"]
    carla = [s for s in stages if s["image"] == CARLA_IMAGE and s["name"]]
    if not carla:
        problems.append(f"no named stage FROM {CARLA_IMAGE} (the source of CARLA's agents package)")
    final = stages[-1]
    if not re.fullmatch(r"python:3\.1[012]-slim(-\w+)?", final["image"]):
        problems.append(f"final stage is FROM {final['image']!r}, not python:3.10-3.12-slim (the carla wheel's range)")
    steps = final["instructions"]
    env_lines = " ".join(a for w, a in steps if w == "ENV")
    pythonpath = re.search(r"PYTHONPATH=(\S+)", env_lines)
    import_path = pythonpath.group(1).split(":") if pythonpath else []

    # agents: copied from the CARLA stage into site-packages or a folder on PYTHONPATH
    names = {s["name"] for s in carla}
    copies = [_flags_and_words(a) for w, a in steps if w == "COPY"]
    agents = [(f, ws) for f, ws in copies if f.get("from") in names and any("agents" in w for w in ws[:-1])]
    if not agents:
        problems.append("no COPY --from=<CARLA stage> of the agents package")
    for _, words in agents:
        dest = words[-1].rstrip("/")
        if not dest.endswith("/agents"):
            problems.append(f"agents copied to {dest!r}: the folder must be named agents to import as `agents`")
        elif "site-packages" not in dest and dest.rsplit("/", 1)[0] not in import_path:
            problems.append(f"agents copied to {dest!r}, whose parent is neither site-packages nor on PYTHONPATH")

    # installs: CPU torch pinned as constraints.txt, then the project with its carla extra under the constraints
    runs = [a for w, a in steps if w == "RUN"]
    torch_at = next((i for i, a in enumerate(runs) if re.search(r"pip install .*\btorch==", a)), None)
    project_at = next((i for i, a in enumerate(runs) if re.search(r"pip install .*[\"']?\.\[carla\]", a)), None)
    pin = re.search(r"^torch==(\S+)", (repo / "constraints.txt").read_text(), re.M)
    if torch_at is None:
        problems.append("no RUN pip install torch==...")
    else:
        got = re.search(r"\btorch==(\S+)", runs[torch_at]).group(1)
        if not pin or got != pin.group(1):
            problems.append(f"torch=={got} installed but constraints.txt pins {pin.group(0) if pin else 'nothing'}")
        if "--index-url https://download.pytorch.org/whl/cpu" not in runs[torch_at]:
            problems.append("torch is not installed from the CPU index (--index-url https://download.pytorch.org/whl/cpu)")
    if project_at is None:
        problems.append("no RUN pip install '.[carla]' (the project with its carla extra)")
    else:
        if torch_at is not None and torch_at > project_at:
            problems.append("torch is installed after the project: pip would pull a CUDA build first")
        if "-c constraints.txt" not in runs[project_at]:
            problems.append("the project install is not under -c constraints.txt (torch could be replaced)")
    installed = " ".join(a for a in runs if "pip install" in a)
    for package in ("networkx", "shapely"):
        if not re.search(rf"\b{package}\b", installed):
            problems.append(f"{package} (imported by CARLA's agents) is not installed")

    # run time: the web port, an unprivileged user, SIGINT, the drive command
    exposed = {p.split("/")[0] for w, a in steps if w == "EXPOSE" for p in a.split()}
    if str(WEB_PORT) not in exposed:
        problems.append(f"EXPOSE {WEB_PORT} missing")
    users = [a.split(":")[0] for w, a in steps if w == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("the final stage runs as root (no USER, or USER root last)")
    signals = [a for w, a in steps if w == "STOPSIGNAL"]
    if signals[-1:] != ["SIGINT"]:
        problems.append("STOPSIGNAL is not SIGINT")
    cmds = [_exec_form(a) for w, a in steps if w == "CMD"]
    if not cmds or cmds[-1][:2] != ["digr", "drive"]:
        problems.append("the default CMD is not an exec-form `digr drive ...`")
    elif "--host" not in cmds[-1] or "--serve" not in cmds[-1]:
        problems.append("the default CMD does not serve the web view on --host 0.0.0.0")

    # COPY sources exist in the build context (the repository root) and .dockerignore keeps them in
    ignored = _dockerignore(repo)
    for flags, words in copies:
        if "from" in flags:
            continue
        for src in words[:-1]:
            if not (repo / src).exists():
                problems.append(f"COPY source {src!r} does not exist in the repository")
            elif src.rstrip("/").split("/")[0] in ignored:
                problems.append(f"COPY source {src!r} is excluded by .dockerignore")
    return problems


def _dockerignore(repo: Path) -> set[str]:
    """Top-level names that .dockerignore excludes (patterns without wildcards or subfolders)."""
    path = repo / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return {
        ln.strip().rstrip("/")
        for ln in lines
        if ln.strip() and not ln.startswith("#") and not re.search(r"[*?!/]", ln.strip().rstrip("/"))
    }


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_dockerfile_is_sound(dockerfile):
    assert dockerfile_problems(dockerfile) == []


def test_dockerfile_and_compose_agree_on_the_server_image(dockerfile, compose):
    images = {s["image"] for s in parse_dockerfile(dockerfile) if s["image"].startswith("carlasim/carla:")}
    assert images == {compose["services"][SERVER]["image"]}


def test_dockerignore_keeps_runs_venv_and_git_out():
    assert {"runs", ".venv", ".git"} <= _dockerignore(REPO)


def test_parser_joins_continued_lines_and_drops_comments():
    text = "# syntax=docker/dockerfile:1\nFROM a:1 AS one\nRUN echo \\\n# a comment inside\n    two\nFROM b:2\nEXPOSE 1\n"
    stages = parse_dockerfile(text)
    assert [(s["image"], s["name"]) for s in stages] == [("a:1", "one"), ("b:2", None)]
    assert stages[0]["instructions"] == [("RUN", "echo      two")]
    assert stages[1]["instructions"] == [("EXPOSE", "1")]


DOCKERFILE_MUTATIONS = [
    ("FROM carlasim/carla:0.9.16 AS agents", "FROM carlasim/carla:0.9.15 AS agents", "named stage FROM"),
    ("FROM python:3.11-slim AS client", "FROM python:3.13-slim AS client", "final stage"),
    ("COPY --from=agents /carla-agents /opt/carla/agents", "COPY --from=agents /carla-agents /opt/carla/nav", "named agents"),
    ("ENV PYTHONPATH=/opt/carla", "ENV PYTHONPATH=/opt/other", "neither site-packages nor on PYTHONPATH"),
    ("COPY --from=agents /carla-agents /opt/carla/agents", "", "agents package"),
    ("pip install torch==2.13.0", "pip install torch==2.12.0", "constraints.txt pins"),
    (" --index-url https://download.pytorch.org/whl/cpu", "", "CPU index"),
    ('-c constraints.txt ".[carla]"', '".[carla]"', "-c constraints.txt"),
    ('".[carla]"', '"."', ".[carla]"),
    (" networkx shapely", " networkx", "shapely"),
    ("EXPOSE 8080", "EXPOSE 8000", "EXPOSE 8080"),
    ("USER digr", "USER root", "root"),
    ("STOPSIGNAL SIGINT", "STOPSIGNAL SIGTERM", "SIGINT"),
    ('CMD ["digr", "drive"', 'CMD ["digr", "run"', "digr drive"),
    ("COPY envs ./envs", "COPY environments ./envs", "does not exist"),
]


@pytest.mark.parametrize("old, new, expected", DOCKERFILE_MUTATIONS, ids=[m[2] for m in DOCKERFILE_MUTATIONS])
def test_dockerfile_validator_catches(dockerfile, old, new, expected):
    assert old in dockerfile, f"the mutation's anchor {old!r} is not in Dockerfile.client"
    problems = dockerfile_problems(dockerfile.replace(old, new))
    assert any(expected in p for p in problems), f"no problem mentions {expected!r}: {problems}"


def test_validator_sees_torch_installed_after_the_project(dockerfile):
    lines = dockerfile.splitlines()
    torch = next(i for i, ln in enumerate(lines) if "pip install torch==" in ln)
    moved = lines[:torch] + lines[torch + 1 :]
    project = next(i for i, ln in enumerate(moved) if ".[carla]" in ln)
    moved.insert(project + 1, lines[torch])
    assert any("after the project" in p for p in dockerfile_problems("\n".join(moved)))
