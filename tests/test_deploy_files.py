"""The deployment files stay honest without a Docker engine: the Dockerfile is hadolint-clean and its HEALTHCHECK
really fails on a 503; compose.yaml names only real commands, options, config files and GPU reservations; every key
of the config model is in config.example.toml and in the README's configuration reference, with the right default.

Each check is a small function run on the real files and, where cheap, on a broken copy to show it can fail.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bot.config import BotConfig, load_config
from bot.metrics import BotMetrics
from nst_jobs import worker_cli
from nst_jobs.metrics import worker_registry

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
README = ROOT / "README.md"
EXAMPLE = ROOT / "config.example.toml"
PYPROJECT = ROOT / "pyproject.toml"

BOT_SERVICES = ("bot", "bot-cpu", "bot-scale")
WORKER_SERVICES = ("worker-0", "worker-1")
EXPECTED_PROFILES = {"bot": [], "bot-cpu": ["cpu"], "bot-scale": ["scale"], "redis": ["scale"],
                     "worker-0": ["scale"], "worker-1": ["scale"], "prometheus": ["monitoring"],
                     "grafana": ["monitoring"]}
#: Services that run someone else's image: the image's name and what the service runs (None: the image's own).
OTHER_IMAGES = {"redis": ("redis:", "redis-server"), "prometheus": ("prom/prometheus:", None),
                "grafana": ("grafana/grafana:", None)}
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "nst.json"


# ---------------------------------------------------------------------------------------------------- helpers


def console_scripts() -> set[str]:
    return set(tomllib.loads(PYPROJECT.read_text())["project"]["scripts"])


def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(stage number, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[int, str, str]] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, args = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage += 1
        result.append((stage, word, args.strip()))
    return result


def final_stage(instructions: list[tuple[int, str, str]]) -> list[tuple[str, str]]:
    last = max(stage for stage, _, _ in instructions)
    return [(word, args) for stage, word, args in instructions if stage == last]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(part, str) for part in value), f"not exec form: {args}"
    return value


def image_env(instructions: list[tuple[int, str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in final_stage(instructions):
        if word == "ENV":
            for part in shlex.split(args):
                key, _, value = part.partition("=")
                env[key] = value
    return env


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def uses_our_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    return isinstance(build, dict) and build.get("context") == "."


def effective_command(service: dict[str, Any], instructions: list[tuple[int, str, str]]) -> list[str]:
    """What the container runs: the service's entrypoint/command over the image's ENTRYPOINT/CMD."""
    stage = final_stage(instructions)
    entrypoint = service.get("entrypoint")
    command = service.get("command")
    if uses_our_image(service) and entrypoint is None:
        entrypoint = next(exec_form(a) for w, a in stage if w == "ENTRYPOINT")
        if command is None:
            command = next(exec_form(a) for w, a in stage if w == "CMD")
    for value in (entrypoint, command):
        assert value is None or isinstance(value, list), f"write entrypoint/command as lists: {value!r}"
    return [*(entrypoint or []), *(command or [])]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (a named volume or a ./path) of the service's volumes."""
    result = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        result[target] = source
    return result


def config_of(service: dict[str, Any], instructions: list[tuple[int, str, str]]) -> Path:
    """The repository file the service's `--config PATH` is: a mounted file, else the one the Dockerfile copies."""
    command = effective_command(service, instructions)
    path = command[command.index("--config") + 1]
    source = mounts(service).get(path)
    if source is None:
        copies = [shlex.split(a) for w, a in final_stage(instructions) if w == "COPY" and "--from" not in a]
        source = next(parts[-2] for parts in copies if parts[-1] == path)
    assert source.startswith("./") or not source.startswith("/"), f"{path} comes from {source}, not from the repo"
    return ROOT / source


def example_keys(text: str) -> list[str]:
    """section.key of every key in a config.example.toml text, commented-out examples included."""
    keys = []
    section = None
    for line in text.splitlines():
        if match := re.match(r"^\s*\[([A-Za-z_]+)\]\s*$", line):
            section = match.group(1)
        elif section and (match := re.match(r"^\s*#?\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)):
            keys.append(f"{section}.{match.group(1)}")
    return keys


def uncomment_examples(text: str) -> str:
    return re.sub(r"^#\s*(?=[A-Za-z_][A-Za-z0-9_]*\s*=)", "", text, flags=re.MULTILINE)


def model_defaults() -> dict[str, Any]:
    """section.key -> default of every setting of the config model (pydantic sections and the QueueConfig
    dataclass), as TOML would write it (paths as strings, tuples as lists, None when unset)."""
    defaults = BotConfig()
    result: dict[str, Any] = {}
    for section in type(defaults).model_fields:
        value = getattr(defaults, section)
        names = ([f.name for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value)
                 else list(type(value).model_fields))
        for name in names:
            default = getattr(value, name)
            if isinstance(default, Path):
                default = str(default)
            elif isinstance(default, tuple):
                default = list(default)
            result[f"{section}.{name}"] = default
    return result


def readme_section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def reference_rows(readme: str) -> dict[str, str]:
    """section.key -> default cell of the README's configuration reference table."""
    rows = {}
    for line in readme_section(readme, "Configuration reference").splitlines():
        if match := re.match(r"^\|\s*`([a-z_]+\.[a-z_]+)`\s*\|([^|]*)\|", line):
            rows[match.group(1)] = match.group(2).strip()
    return rows


def reference_problems(readme: str, example: str) -> list[str]:
    """What the README's configuration reference gets wrong: missing keys and defaults unlike the model's."""
    rows = reference_rows(readme)
    defaults = model_defaults()
    problems = [f"{key}: not in the README's configuration reference" for key in example_keys(example)
                if key not in rows]
    for key, cell in rows.items():
        if key not in defaults:
            problems.append(f"{key}: in the README but not a setting")
            continue
        if cell == "unset":
            documented = None
        else:
            value = re.fullmatch(r"`(.*)`", cell)
            assert value, f"{key}: write the default as `toml value` or unset, not {cell!r}"
            documented = tomllib.loads(f"v = {value.group(1)}")["v"]
        if documented != defaults[key]:
            problems.append(f"{key}: README says default {cell}, the model says {defaults[key]!r}")
    return problems


def console_script(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"{name} is not installed in {path.parent} (pip install -e '.[dev]')"
    return str(path)


def hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: it comes with the dev extra (pip install -e '.[dev]', or scripts/setup dev)"
    return found


# ---------------------------------------------------------------------------------------------------- Dockerfile


def test_hadolint_passes_on_the_dockerfile() -> None:
    run = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN cd /tmp\n")
    run = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "DL3007" in run.stdout  # :latest


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    instructions = dockerfile_instructions(text)
    assert len([w for _, w, _ in instructions if w == "FROM"]) >= 2, "multi-stage: a builder and a runtime stage"
    args = [a for _, w, a in instructions if w == "ARG"]
    assert "VARIANT=cuda" in args and "BAKE_TORCHVISION_WEIGHTS=0" in args
    assert re.search(r"\bcuda\)", text) and re.search(r"\bcpu\)", text), "VARIANT chooses the torch build"
    stage = final_stage(instructions)
    users = [a for w, a in stage if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the runtime stage runs as a non-root user"
    volumes = [v for w, a in stage if w == "VOLUME" for v in exec_form(a)]
    assert {"/data", "/models"} <= set(volumes)
    assert image_env(instructions)["TORCH_HOME"] == "/models"
    entrypoint = next(exec_form(a) for w, a in stage if w == "ENTRYPOINT")
    assert entrypoint[0] in console_scripts()
    baked = config_of({"build": {"context": "."}}, instructions)  # the config the image carries
    assert load_config(baked, {}).queue.data_dir == Path("/data")


def test_dockerfile_copies_only_what_dockerignore_lets_in() -> None:
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    assert "*" in (ROOT / ".dockerignore").read_text().splitlines(), ".dockerignore starts from nothing"
    for _, word, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if word != "COPY" or "--from" in args:
            continue
        sources = [p for p in shlex.split(args) if not p.startswith("--")][:-1]
        for source in sources:
            source = source.rstrip("/").removeprefix("./")
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert source in allowed, f"COPY {source}: .dockerignore keeps it out of the build context"


@pytest.fixture()
def health_server() -> Iterator[dict[str, Any]]:
    """A stand-in for the bot's /healthz answering with state['status']."""
    state: dict[str, Any] = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = state["status"] if self.path == "/healthz" else 404
            body = json.dumps({"ok": code == 200}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    yield state
    server.shutdown()
    server.server_close()


def test_healthcheck_passes_only_on_200(health_server: dict[str, Any]) -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    check = next(a for w, a in final_stage(instructions) if w == "HEALTHCHECK")
    command = exec_form(check[check.index("CMD") + 3:].strip())
    assert command[0] == "python"
    env = image_env(instructions)
    defaults = BotConfig().health
    assert env["NST_HEALTHCHECK_URL"] == f"http://127.0.0.1:{defaults.port}/healthz"
    assert defaults.host in ("127.0.0.1", "0.0.0.0")  # reachable from inside the container

    def run(url: str) -> int:
        return subprocess.run([sys.executable, *command[1:]], env={"NST_HEALTHCHECK_URL": url},
                              capture_output=True, timeout=30).returncode

    assert run(health_server["url"]) == 0
    health_server["status"] = 503
    assert run(health_server["url"]) != 0
    with socket.socket() as sock:  # nothing listening
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert run(f"http://127.0.0.1:{closed}/healthz") != 0


# ---------------------------------------------------------------------------------------------------- compose.yaml


def test_compose_profiles_and_services() -> None:
    services = compose()["services"]
    assert {name: service.get("profiles", []) for name, service in services.items()} == EXPECTED_PROFILES


def test_compose_commands_are_real() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    scripts = console_scripts()
    for name, service in compose()["services"].items():
        command = effective_command(service, instructions)
        if uses_our_image(service):
            assert command and command[0] in scripts, f"{name}: {command[:1]} is not one of {sorted(scripts)}"
            continue
        image, runs = OTHER_IMAGES[name]
        assert service["image"].startswith(image) and service["image"] != image, f"{name}: name {image}VERSION"
        if runs is not None:
            assert command and command[0] == runs, name
        else:
            assert "entrypoint" not in service, f"{name}: runs the image's own entry point"
    redis = effective_command(compose()["services"]["redis"], instructions)
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--maxmemory-policy") + 1] == "noeviction"


def test_compose_bot_commands_and_configs(tmp_path: Path) -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    services = compose()["services"]
    health_url = image_env(instructions)["NST_HEALTHCHECK_URL"]
    for name in BOT_SERVICES:
        service = services[name]
        command = effective_command(service, instructions)
        assert command[0] == "nst-bot"
        path = config_of(service, instructions)
        assert path.is_file(), f"{name}: {path} does not exist"
        # The real console script, with the service's arguments but `check` (which touches nothing) and the
        # repository file in place of the container path.
        args = [str(path) if arg == "/config/config.toml" else arg for arg in command[1:]]
        assert args[-1] in ("run", "sync", "check"), f"{name}: nst-bot {' '.join(command[1:])}"
        run = subprocess.run([console_script("nst-bot"), *args[:-1], "check"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120, env={"DISCORD_TOKEN": "test.token", "PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, f"{name}: {run.stderr}"
        config = load_config(path, {})
        assert str(config.queue.data_dir) in mounts(service), f"{name}: queue.data_dir is not a volume"
        assert health_url == f"http://127.0.0.1:{config.health.port}/healthz", f"{name}: the healthcheck misses it"
        assert "healthcheck" not in service, f"{name}: the image's healthcheck applies"
        assert [e["path"] if isinstance(e, dict) else e for e in service["env_file"]] == [".env"]
    assert load_config(config_of(services["bot"], instructions), {}).queue.backend == "local"
    assert load_config(config_of(services["bot-cpu"], instructions), {}).queue.backend == "local"
    scale = load_config(config_of(services["bot-scale"], instructions), {}).queue
    assert scale.backend == "celery" and scale.broker_url.startswith("redis://redis:")


def test_compose_workers_match_the_bot() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    services = compose()["services"]
    scale = load_config(config_of(services["bot-scale"], instructions), {}).queue
    hostnames, gpus = set(), set()
    for name in WORKER_SERVICES:
        command = effective_command(services[name], instructions)
        assert command[0] == "nst-worker"
        args = worker_cli.build_parser().parse_args(command[1:])
        worker_cli._check(args)
        assert args.broker == scale.broker_url
        assert args.time_limit == scale.celery_time_limit_seconds
        assert args.visibility_timeout == scale.celery_visibility_timeout_seconds
        assert args.device == "cuda" and args.concurrency == 1
        hostnames.add(args.hostname)
        gpus.add(tuple(services[name]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]))
        assert services[name]["healthcheck"] == {"disable": True}, f"{name}: it has no /healthz"
    assert len(hostnames) == len(gpus) == len(WORKER_SERVICES), "each worker its own name and its own GPU"


def compose_seconds(duration: str) -> float:
    """A Compose duration ("90s", "1m30s", "1h") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", duration)
    assert parts and "".join(a + b for a, b in parts) == duration, f"not a Compose duration: {duration!r}"
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(amount) * unit[name] for amount, name in parts)


def test_stop_grace_periods_outlast_the_drain_and_the_job_time_limit() -> None:
    """`docker stop` waits stop_grace_period, then kills: a bot gets longer than its drain (queue.drain_seconds,
    plus time to close), a worker longer than a job may run (its warm shutdown finishes the job)."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    services = compose()["services"]
    for name in BOT_SERVICES:
        drain = load_config(config_of(services[name], instructions), {}).queue.drain_seconds
        grace = compose_seconds(services[name]["stop_grace_period"])
        assert grace >= drain + 20, f"{name}: stop_grace_period {grace:g} s leaves no time after a {drain:g} s drain"
    for name in WORKER_SERVICES:
        command = effective_command(services[name], instructions)
        limit = worker_cli.build_parser().parse_args(command[1:]).time_limit
        grace = compose_seconds(services[name]["stop_grace_period"])
        assert grace > limit, f"{name}: stop_grace_period {grace:g} s is shorter than a job may run ({limit} s)"
    assert compose_seconds("1m30s") == 90
    with pytest.raises(AssertionError):
        compose_seconds("90 seconds")


def test_compose_gpu_reservations() -> None:
    services = compose()["services"]
    for name, service in services.items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        if name in ("bot", *WORKER_SERVICES):
            assert devices and len(devices) == 1, f"{name}: one GPU reservation"
            assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"], name
            assert devices[0].get("count", len(devices[0].get("device_ids", []))) == 1, f"{name}: one GPU"
        else:
            assert devices is None, f"{name}: needs no GPU"


def test_compose_build_args_and_volumes() -> None:
    data = compose()
    declared = {a.split("=")[0] for _, w, a in dockerfile_instructions(DOCKERFILE.read_text()) if w == "ARG"}
    for name, service in data["services"].items():
        build = service.get("build")
        if isinstance(build, dict):
            assert set(build.get("args", {})) <= declared, f"{name}: a build argument the Dockerfile lacks"
        for source in mounts(service).values():
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which does not exist"
            else:
                assert source in data["volumes"], f"{name}: volume {source} is not declared"
    assert data["services"]["bot"]["build"]["args"]["VARIANT"] == "cuda"
    assert data["services"]["bot-cpu"]["build"]["args"]["VARIANT"] == "cpu"


def test_readme_compose_commands_name_real_services() -> None:
    services = compose()["services"]
    commands = re.findall(r"^(docker compose [^\n#]*?)\s*(?:#.*)?$", README.read_text(), flags=re.MULTILINE)
    ups = [shlex.split(c) for c in commands if " up " in f"{c} "]
    assert ups, "the README shows how to start the services"
    for words in ups:
        profiles = [words[i + 1] for i, w in enumerate(words) if w == "--profile"]
        named = [w for w in words[words.index("up") + 1:] if not w.startswith("-")]
        for name in named:
            assert name in services, f"{' '.join(words)}: no service {name}"
            assert set(services[name].get("profiles", [])) <= set(profiles), f"{' '.join(words)}: profile"
        if profiles:
            assert named, f"{' '.join(words)}: name the services, or the default bot starts as well"


# ---------------------------------------------------------------------------------------------------- monitoring

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset"}


def exported_metrics() -> set[str]:
    """Every sample name the bot's /metrics and nst-worker's --metrics-port can serve."""
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
    for registry in (BotMetrics(CollectorRegistry()).registry, worker_registry("cpu")):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    return names


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, keywords, labels or durations)."""
    for pattern in (r'"[^"]*"', r"\{[^}]*\}", r"\[[^\]]*\]", r"\b(?:by|without|on|ignoring)\s*\([^)]*\)"):
        expr = re.sub(pattern, " ", expr)
    return {m.group() for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)
            if m.group() not in PROMQL_WORDS and not expr[m.end():].lstrip().startswith("(")}


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def test_promql_metrics_finds_names_and_skips_the_rest() -> None:
    expr = 'histogram_quantile(0.95, sum by (le) (rate(nst_x_bucket{job="a b"}[1h]))) / on (device) nst_y'
    assert promql_metrics(expr) == {"nst_x_bucket", "nst_y"}


def test_dashboard_reads_only_metrics_we_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_metrics()
    exprs = dashboard_exprs()
    for expr in exprs:
        assert promql_metrics(expr) <= exported, f"{expr}: {promql_metrics(expr) - exported} is not exported"
    assert promql_metrics("nst_jobs_total") - exported == {"nst_jobs_total"}  # the check can fail
    joined = "\n".join(exprs)
    for wanted in ('nst_queue_jobs{state="waiting"}', "by (outcome) (increase(nst_jobs_finished_total[1h]))",
                   "histogram_quantile(0.5, sum by (le) (rate(nst_job_duration_seconds_bucket",
                   "histogram_quantile(0.95, sum by (le) (rate(nst_job_duration_seconds_bucket",
                   "histogram_quantile(0.5, sum by (le) (rate(nst_queue_wait_seconds_bucket",
                   "histogram_quantile(0.95, sum by (le) (rate(nst_queue_wait_seconds_bucket",
                   "nst_discord_connected"):
        assert wanted in joined, f"the dashboard shows no {wanted}"
    scrape_jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    assert set(re.findall(r'job="([^"]+)"', joined)) <= scrape_jobs
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_monitoring_profile_scrapes_the_bot_and_the_workers() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    services = compose()["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in prometheus["command"])
    assert mounts(prometheus)[flags["config.file"]] == "./deploy/prometheus.yml"
    assert "web.listen-address" not in flags  # Prometheus's own port, 9090
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in
            yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    for name in BOT_SERVICES:
        service = services[name]
        assert jobs["nst-bot"]["names"] == service["networks"]["default"]["aliases"], name
        health = load_config(config_of(service, instructions), {}).health
        assert jobs["nst-bot"]["port"] == health.port, f"{name}: its /metrics is on {health.port}"
        assert health.host == "0.0.0.0", f"{name}: Prometheus, another container, cannot reach 127.0.0.1"
    for name in WORKER_SERVICES:
        service = services[name]
        assert jobs["nst-worker"]["names"] == service["networks"]["default"]["aliases"], name
        args = worker_cli.build_parser().parse_args(effective_command(service, instructions)[1:])
        assert jobs["nst-worker"]["port"] == args.metrics_port, name

    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "nst.yml").read_text())["providers"][0]
    grafana_mounts = {source: target for target, source in mounts(grafana).items()}
    assert grafana_mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana_mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    for service in (prometheus, grafana):
        assert all(port.startswith("127.0.0.1:") for port in service["ports"]), "published on loopback only"


def test_readme_scrape_example_reads_the_bots_metrics_port() -> None:
    section = readme_section(README.read_text(), "Monitoring")
    block = re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    assert block, "the README shows a Prometheus scrape configuration"
    [job] = yaml.safe_load(block.group(1))["scrape_configs"]
    [target] = job["static_configs"][0]["targets"]
    assert target.endswith(f":{BotConfig().health.port}") and job.get("metrics_path", "/metrics") == "/metrics"
    families = {family.name + ("_total" if family.type == "counter" else "")
                for family in BotMetrics(CollectorRegistry()).registry.collect() if family.name.startswith("nst_")}
    documented = set(re.findall(r"^\| `(nst_[a-z_]+)` \|", section, flags=re.MULTILINE))
    assert documented == families  # each of the bot's metrics, by the name a query uses


# ---------------------------------------------------------------------------------------------------- config


def test_example_config_loads_with_and_without_its_commented_examples(tmp_path: Path) -> None:
    assert isinstance(load_config(EXAMPLE, {}), BotConfig)
    uncommented = tmp_path / "config.toml"
    uncommented.write_text(uncomment_examples(EXAMPLE.read_text()))
    assert load_config(uncommented, {}).discord.token_file is not None  # the commented examples are valid too


def test_every_setting_is_in_the_example_config() -> None:
    keys = example_keys(EXAMPLE.read_text())
    assert len(keys) == len(set(keys)), "a key is in config.example.toml twice"
    assert set(model_defaults()) == set(keys)


def test_example_key_check_catches_a_missing_key() -> None:
    text = EXAMPLE.read_text()
    without = re.sub(r"^preview_every\s*=.*$", "", text, flags=re.MULTILINE)
    assert set(model_defaults()) - set(example_keys(without)) == {"progress.preview_every"}


def test_readme_documents_every_key_with_its_default() -> None:
    assert reference_problems(README.read_text(), EXAMPLE.read_text()) == []


def test_readme_check_catches_missing_and_wrong_rows() -> None:
    readme = README.read_text()
    missing = re.sub(r"^\|\s*`limits\.max_size`.*\n", "", readme, flags=re.MULTILINE)
    assert reference_problems(missing, EXAMPLE.read_text()) == [
        "limits.max_size: not in the README's configuration reference"]
    wrong = re.sub(r"^(\|\s*`queue\.per_user_cap`\s*\|)[^|]*\|", r"\1 `4` |", readme, flags=re.MULTILINE)
    assert reference_problems(wrong, EXAMPLE.read_text()) == [
        "queue.per_user_cap: README says default `4`, the model says 3"]


# ---------------------------------------------------------------------------------------------------- README


def test_quick_start_is_two_commands() -> None:
    section = readme_section(README.read_text(), "Quick start")
    block = re.search(r"```(?:bash)?\n(.*?)```", section, flags=re.DOTALL)
    assert block
    commands = [line.split("#")[0].split() for line in block.group(1).splitlines() if line.split("#")[0].strip()]
    assert [c[-1] for c in commands] == ["scripts/bot", "scripts/test"]
    for script in ("scripts/bot", "scripts/test"):
        assert (ROOT / script).stat().st_mode & 0o111, f"{script} is not executable"
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_without_a_token_the_bot_says_what_to_do(tmp_path: Path) -> None:
    run = subprocess.run([console_script("nst-bot"), "check"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 2
    assert "DISCORD_TOKEN" in run.stderr and "Reset Token" in run.stderr, run.stderr
    assert "Discord application set-up" in run.stderr and "## Discord application set-up" in README.read_text()


def test_invite_permissions_add_up() -> None:
    """The README lists each permission with its bit; the integer in the invite URL is their sum."""
    section = readme_section(README.read_text(), "Discord application set-up")
    bits = [int(b) for b in re.findall(r"`1 << (\d+)`", section)]
    assert len(bits) >= 5 and len(set(bits)) == len(bits)
    permissions = set(re.findall(r"permissions=(\d+)", section))
    assert permissions == {str(sum(1 << b for b in bits))}
    assert "scope=bot+applications.commands" in section


def test_gallery_images_exist_and_are_small() -> None:
    shown = re.findall(r"\]\((docs/gallery/[^)]+)\)", README.read_text())
    assert len(shown) >= 3
    for path in shown:
        assert (ROOT / path).is_file(), path
        assert (ROOT / path).stat().st_size < 300_000, f"{path} is over 300 KB"
