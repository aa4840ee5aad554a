"""``prefect-jobs up``: the whole embedded stack in one command, supervised.

``up`` starts, in this order, three child processes and watches them:

1. ``prefect server start`` with its UI, on its own SQLite database under ``<home>/prefect``
   (``PREFECT_HOME``), listening on ``prefect_port``; ``PREFECT_SERVER_API_PORT`` and
   ``PREFECT_UI_API_URL`` are set so the UI calls that port, not 4200;
2. the REST API (``jobs_plugin.rest.create_app`` under uvicorn) on ``api_port``;
3. ``workers`` process workers (``prefect worker start``) on the work pool ``work_pool``
   (``PREFECT_JOBS_WORK_POOL``, default ``jobs``), which ``up`` creates if missing and puts the
   ``job-runner`` deployment (``flows.job_runner.run_job``) on, so executions, job schedules
   (each scheduled job's own deployment, re-synced from the catalog at every start) and
   ``deployment``-isolated workflows all run the way they run with workers on other machines.

Every child gets ``PREFECT_API_URL`` of the server, ``PREFECT_HOME`` and ``PREFECT_JOBS_HOME``,
runs in its own process group (so a Ctrl-C in the terminal reaches only the supervisor, and
stopping a child also stops whatever it spawned) and logs to ``<home>/logs/<child>.log``. The
organization gets an API key, kept in ``<home>/api-key`` (mode 0600) and reused by later starts
while it stays valid. ``<home>/up.json`` names the running stack (pid and URLs) and keeps a
second ``up`` off the same home.

SIGINT or SIGTERM stops the children (SIGTERM to each process group, SIGINT to the workers',
SIGKILL after a grace period) and ``up`` returns 0; a child that dies on its own stops the rest
and ``up`` returns 1. Nothing is fetched from the network: the UI ships inside the Prefect wheel.

``python -m jobs_plugin.stack [--home DIR] [--host H] [--prefect-port N] [--api-port N]`` runs
it until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from urllib.parse import quote

import httpx

DEFAULT_PREFECT_PORT = 4200
"""Prefect's own default port."""
KEY_FILE = "api-key"
STATE_FILE = "up.json"
_APP = "jobs_plugin.rest:create_app"
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


class StackError(Exception):
    """The stack could not be started (a port in use, a child that died or never answered)."""


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its data and where it listens."""

    home: Path
    host: str = "127.0.0.1"
    prefect_port: int = DEFAULT_PREFECT_PORT
    api_port: int = 4300
    organization: str = "default"
    work_pool: str = "jobs"
    workers: int = 1
    worker_poll_seconds: float = 1.0
    """How often a worker asks the server for flow runs to execute (Prefect's default: 10)."""
    startup_timeout_seconds: float = 120.0
    """How long each child may take to answer (a cold Prefect server takes ~20 s here)."""
    stop_grace_seconds: float = 10.0
    """How long the children get to exit after SIGTERM before they are killed."""

    @property
    def url_host(self) -> str:
        """The host to put in URLs: a wildcard address is reached through the loopback."""
        if self.host in _WILDCARD_HOSTS:
            return "127.0.0.1"
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def prefect_url(self) -> str:
        return f"http://{self.url_host}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def api_url(self) -> str:
        return f"http://{self.url_host}:{self.api_port}"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def key_file(self) -> Path:
        return self.home / KEY_FILE

    @property
    def state_file(self) -> Path:
        return self.home / STATE_FILE


@dataclass
class Child:
    """A supervised subprocess, leader of its own process group, logging to a file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    stop_signal: int = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {self.args}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def exit_code(self) -> int | None:
        """None while running (or never started)."""
        return self.process.poll() if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child and everything it spawned."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Stack:
    """The Prefect server, the REST API and the workers of one home folder."""

    def __init__(
        self,
        config: StackConfig,
        *,
        stop: threading.Event | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.stop_requested = stop or threading.Event()
        self.echo = echo or _print
        self.children: list[Child] = []
        self.api_key: str | None = None
        self.api_key_created = False

    # ----------------------------------------------------------------------- environment

    def child_env(self) -> dict[str, str]:
        """The environment of every child: this one, pointed at the stack's server and home."""
        c = self.config
        env = dict(os.environ)
        env.update(
            {
                "PREFECT_API_URL": c.prefect_api_url,
                "PREFECT_HOME": str(c.prefect_home),
                "PREFECT_JOBS_HOME": str(c.home),
                "PREFECT_SERVER_API_HOST": c.host,
                "PREFECT_SERVER_API_PORT": str(c.prefect_port),
                "PREFECT_UI_API_URL": c.prefect_api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # ----------------------------------------------------------------------- start

    def start(self) -> None:
        """Start every child and wait until each answers; ``StackError`` if one does not."""
        c = self.config
        c.home.mkdir(parents=True, exist_ok=True)
        self._claim_home()
        for port, what in ((c.prefect_port, "--prefect-port"), (c.api_port, "--api-port")):
            _check_port_free(c.host, port, what)
        env = self.child_env()
        # This process writes the catalog (the API key) and must read the same one.
        os.environ["PREFECT_JOBS_HOME"] = str(c.home)
        from jobs_plugin.settings import get_settings

        get_settings.cache_clear()

        server = self._spawn(
            "prefect-server",
            f"prefect server start --host {c.host} --port {c.prefect_port}",
            env,
        )
        self.echo(f"starting the Prefect server on {c.prefect_url} (log: {server.log_path})")
        self._wait_until(server, lambda: _get_ok(f"{c.prefect_api_url}/health"))

        self.api_key, self.api_key_created = ensure_api_key(c.key_file, c.organization)

        api = self._spawn(
            "api",
            f"uvicorn --factory {_APP} --host {c.host} --port {c.api_port}",
            env,
        )
        self.echo(f"starting the REST API on {c.api_url} (log: {api.log_path})")
        self._wait_until(api, lambda: _get_ok(f"{c.api_url}/v1/openapi.json"))

        self._register_job_runner()
        started = time.time()
        for number in range(1, c.workers + 1):
            name = "worker" if c.workers == 1 else f"worker-{number}"
            worker = self._spawn(
                name,
                f"prefect worker start --pool {c.work_pool} --type process "
                f"--name {name}@{socket.gethostname()}",
                {
                    **env,
                    "PREFECT_WORKER_QUERY_SECONDS": str(c.worker_poll_seconds),
                    "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                },
                # SIGINT stops a worker cleanly (and the flow runs it started with it).
                stop_signal=signal.SIGINT,
            )
            self.echo(f"starting {name} on work pool {c.work_pool!r} (log: {worker.log_path})")
        for child in self.children[2:]:
            self._wait_until(child, partial(self._worker_polled_since, child, started))
        self._write_state()

    def _register_job_runner(self) -> None:
        """The work pool, the job-runner deployment on it, and the job deployments of the
        catalog's schedules (the catalog is the truth; the Prefect database may be new)."""
        import asyncio

        from prefect.settings import PREFECT_API_URL, temporary_settings

        from jobs_plugin import catalog, prefect_deployments

        c = self.config
        with temporary_settings({PREFECT_API_URL: c.prefect_api_url}):
            asyncio.run(prefect_deployments.register_job_runner(c.work_pool))
            kept = asyncio.run(prefect_deployments.sync_all(catalog.scheduled_jobs()))
        if kept:
            self.echo(f"schedules of {len(kept)} job(s) are on their deployments")

    def _spawn(
        self, name: str, command: str, env: dict[str, str], stop_signal: int = signal.SIGTERM
    ) -> Child:
        """Start ``python -m <command>`` (split on spaces) as the child ``name``."""
        args = [sys.executable, "-m", *command.split()]
        child = Child(name, args, env, self.config.log_dir / f"{name}.log", stop_signal)
        self.children.append(child)
        child.start()
        return child

    def _wait_until(self, child: Child, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_seconds
        while not ready():
            code = child.exit_code()
            if code is not None:
                raise StackError(
                    f"the {child.name} exited with code {code} while starting; the end of "
                    f"{child.log_path}:\n{child.log_tail()}"
                )
            if self.stop_requested.is_set():
                raise StackError("interrupted while starting")
            if time.monotonic() > deadline:
                raise StackError(
                    f"the {child.name} did not answer within "
                    f"{self.config.startup_timeout_seconds:.0f} s; see {child.log_path}"
                )
            self.stop_requested.wait(0.25)

    def _worker_polled_since(self, child: Child, started: float) -> bool:
        """A worker is up once the server has its heartbeat from after ``started``."""
        url = f"{self.config.prefect_api_url}/work_pools/{quote(self.config.work_pool)}"
        try:
            response = httpx.post(f"{url}/workers/filter", json={"limit": 50}, timeout=5)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        from datetime import datetime

        for worker in response.json():
            if not str(worker.get("name", "")).startswith(f"{child.name}@"):
                continue
            beat = worker.get("last_heartbeat_time")
            if beat and datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp() >= (
                started - 1
            ):
                return True
        return False

    def _claim_home(self) -> None:
        """Refuse a second stack on the same home while the first one runs."""
        try:
            state = json.loads(self.config.state_file.read_text())
        except (OSError, ValueError):
            return
        pid = state.get("pid") if isinstance(state, dict) else None
        if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
            raise StackError(
                f"prefect-jobs up already runs for {self.config.home} (pid {pid}): "
                f"stop it first, or use another home"
            )

    def _write_state(self) -> None:
        c = self.config
        state = {
            "pid": os.getpid(),
            "prefectUiUrl": c.prefect_url,
            "prefectApiUrl": c.prefect_api_url,
            "apiUrl": c.api_url,
            "apiKeyFile": str(c.key_file),
            "children": {child.name: child.pid for child in self.children},
        }
        c.state_file.write_text(json.dumps(state, indent=2) + "\n")

    # ----------------------------------------------------------------------- run and stop

    def banner(self) -> str:
        c = self.config
        from flows.job_runner import DEPLOYMENT

        if self.api_key_created:
            key = f"{self.api_key}  (new; saved in {c.key_file})"
        else:
            key = f"in {c.key_file}"
        rows = [
            ("Prefect UI", c.prefect_url),
            ("Prefect API", c.prefect_api_url),
            ("REST API", f"{c.api_url}/v1"),
            ("API docs", f"{c.api_url}/v1/docs"),
            (f"API key ({c.organization})", key),
            ("job runner", f"deployment {DEPLOYMENT!r}"),
            ("work pool", f"{c.work_pool} ({c.workers} worker{'s' if c.workers != 1 else ''})"),
            ("home", str(c.home)),
            ("logs", str(c.log_dir)),
        ]
        width = max(len(label) for label, _ in rows)
        lines = [f"  {label:<{width}}  {value}" for label, value in rows]
        return "\n".join(
            [
                "prefect-jobs is up:",
                *lines,
                f"From another shell: export PREFECT_API_URL={c.prefect_api_url}",
                "Press Ctrl-C to stop.",
            ]
        )

    def watch(self) -> int:
        """Block until a stop is requested (0) or a child dies (1)."""
        while not self.stop_requested.wait(0.5):
            for child in self.children:
                code = child.exit_code()
                if code is not None:
                    self.echo(
                        f"the {child.name} stopped unexpectedly (exit code {code}); stopping "
                        f"the stack. The end of {child.log_path}:\n{child.log_tail()}"
                    )
                    return 1
        return 0

    def stop(self) -> None:
        """Send each child's process group its stop signal (last started first), SIGKILL what
        remains after the grace period, and forget the state file."""
        for child in reversed(self.children):
            child.signal_group(child.stop_signal)
        deadline = time.monotonic() + self.config.stop_grace_seconds
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.echo(f"the {child.name} did not stop in time: killing it")
        for child in self.children:  # also whatever a child left behind in its group
            child.signal_group(signal.SIGKILL)
            if child.process is not None:
                child.process.wait()
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(self.config.state_file.read_text())
            if state.get("pid") == os.getpid():
                self.config.state_file.unlink()


def up(
    home: Path | None = None,
    *,
    host: str | None = None,
    prefect_port: int | None = None,
    api_port: int | None = None,
    organization: str | None = None,
    workers: int = 1,
    stop: threading.Event | None = None,
    echo: Callable[[str], None] | None = None,
) -> int:
    """Run the stack until ``stop`` is set (or a child dies); the exit code: 0 when stopped on
    request, 1 when a child died or the stack could not start.

    Defaults: ``home``, ``host``, ``api_port`` and ``organization`` from the settings
    (``PREFECT_JOBS_HOME``, ``PREFECT_JOBS_API_HOST``, ``PREFECT_JOBS_API_PORT``,
    ``PREFECT_JOBS_DEFAULT_ORGANIZATION``); ``prefect_port`` from ``PREFECT_JOBS_PREFECT_PORT``
    once the settings have that field, else 4200.
    """
    from jobs_plugin.settings import get_settings

    settings = get_settings()
    config = StackConfig(
        home=(home or settings.home_path).expanduser().resolve(),
        host=host or settings.api_host,
        prefect_port=_setting_prefect_port() if prefect_port is None else prefect_port,
        api_port=settings.api_port if api_port is None else api_port,
        organization=organization or settings.default_organization,
        work_pool=settings.work_pool,
        workers=workers,
    )
    if workers < 1:
        _print("error: --workers must be at least 1")
        return 1
    stack = Stack(config, stop=stop, echo=echo)
    try:
        try:
            stack.start()
        except StackError as exc:
            stack.echo(f"error: {exc}")
            return 0 if stack.stop_requested.is_set() else 1
        except Exception as exc:  # the catalog or the key: the details go to a log file
            log = config.log_dir / "up.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as fh:
                traceback.print_exc(file=fh)
            stack.echo(f"error: could not start: {exc.__class__.__name__}: {exc} (see {log})")
            return 1
        stack.echo(stack.banner())
        return stack.watch()
    finally:
        stack.echo("stopping")
        stack.stop()
        stack.echo("stopped")


def run(
    home: Path | None = None,
    *,
    host: str | None = None,
    prefect_port: int | None = None,
    api_port: int | None = None,
    organization: str | None = None,
    workers: int = 1,
) -> int:
    """``up`` in the main thread of a command: SIGINT (Ctrl-C) and SIGTERM stop the stack.
    Returns the exit code; the previous signal handlers are put back."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return up(
            home,
            host=host,
            prefect_port=prefect_port,
            api_port=api_port,
            organization=organization,
            workers=workers,
            stop=stop,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def running_api_url(home: Path) -> str | None:
    """The Prefect API URL of the stack running on ``home``, if one runs (from its state
    file): what a command should use instead of starting a temporary server on the same
    database."""
    try:
        state = json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int):
        return None
    url = state.get("prefectApiUrl")
    return url if isinstance(url, str) and _pid_alive(state["pid"]) else None


# --------------------------------------------------------------------------- helpers


def ensure_api_key(path: Path, organization: str) -> tuple[str, bool]:
    """The API key kept in ``path`` if it still authenticates for ``organization``; otherwise
    a new key of the organization, written there (0600). Returns the key and whether it is new.
    """
    import jobs_plugin as jp
    from jobs_plugin import api
    from jobs_plugin.errors import JobsError

    try:
        secret = path.read_text().strip()
    except OSError:
        secret = ""
    if secret:
        try:
            if api.authenticate(secret)[0] == organization:
                return secret, False
        except JobsError:
            pass
    _, secret = jp.create_api_key(organization, name="prefect-jobs up")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    path.chmod(0o600)
    return secret, True


def _setting_prefect_port() -> int:
    """``Settings.prefect_port`` (``PREFECT_JOBS_PREFECT_PORT``) where the settings have it."""
    from jobs_plugin.settings import get_settings

    port = getattr(get_settings(), "prefect_port", DEFAULT_PREFECT_PORT)
    return int(port)


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _check_port_free(host: str, port: int, option: str) -> None:
    if port == 0:
        raise StackError(f"{option} must name a port (0 is not allowed)")
    bind_host = "0.0.0.0" if host in _WILDCARD_HOSTS else host.strip("[]")
    try:
        info = socket.getaddrinfo(bind_host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
        family, kind, proto, _, address = info[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        raise StackError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another {option}"
        ) from exc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _print(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs_plugin.stack",
        description="Run the Prefect server and UI, the REST API and the workers until "
        "interrupted.",
    )
    parser.add_argument("--home", type=Path, help="Home folder (default: PREFECT_JOBS_HOME).")
    parser.add_argument("--host", help="Interface to listen on (default: PREFECT_JOBS_API_HOST).")
    parser.add_argument("--prefect-port", type=int, help="Port of the Prefect server and UI.")
    parser.add_argument("--api-port", type=int, help="Port of the REST API.")
    parser.add_argument("--organization", help="Organization whose API key is kept.")
    parser.add_argument(
        "--workers", type=int, default=1, help="Process workers to start on the work pool."
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m jobs_plugin.stack [options]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    options = _parser().parse_args(args)
    sys.exit(
        run(
            options.home,
            host=options.host,
            prefect_port=options.prefect_port,
            api_port=options.api_port,
            organization=options.organization,
            workers=options.workers,
        )
    )


if __name__ == "__main__":
    main()
