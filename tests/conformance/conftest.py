"""Conformance fixtures: a real `berth serve` on a free port with a temporary data dir, driven
only through boto3 and the bedrock-agentcore SDK.

The server binary comes from $BERTH_TEST_BINARY (the test command builds it). Every test module
runs against SQLite and, when $BERTH_TEST_POSTGRES_URL names a server, against a fresh
PostgreSQL database too.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import urllib.request

import boto3
import pytest

BINARY = os.environ.get("BERTH_TEST_BINARY", os.path.join(os.path.dirname(__file__), "../../target/debug/berth"))
POSTGRES = os.environ.get("BERTH_TEST_POSTGRES_URL")
# The embedded models (`make models`); without them Berth retrieves records by full text only.
MODELS = os.environ.get("BERTH_TEST_MODELS_DIR")
# The Code Interpreter environment (`make interpreter-env`): Python data libraries and Deno.
INTERPRETER = os.environ.get("BERTH_TEST_INTERPRETER_DIR")
BACKENDS = ["sqlite"] + (["postgres"] if POSTGRES else [])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_database():
    """A fresh database on the test PostgreSQL server."""
    name = "berth_conf_" + uuid.uuid4().hex[:12]
    base = POSTGRES.rsplit("/", 1)[0]
    subprocess.run(["psql", POSTGRES, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"{base}/{name}"


class Server:
    """A running Berth server and the environment that points clients at it."""

    def __init__(self, backend, config=None):
        """`config` is the text of a config file (TOML) to start with."""
        self.backend = backend
        self.data_dir = tempfile.mkdtemp(prefix="berth-conformance-")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        args = [BINARY, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir]
        if config is not None:
            path = os.path.join(self.data_dir, "berth.toml")
            with open(path, "w") as f:
                f.write(config)
            args += ["--config", path]
        if backend == "postgres":
            args += ["--database-url", postgres_database()]
        if MODELS:
            args += ["--models-dir", MODELS]
        if INTERPRETER:
            args += ["--interpreter-dir", INTERPRETER]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_") or k.startswith("BERTH_TEST_")}
        env.setdefault("BERTH_LOG", "warn")
        self.log = open(os.path.join(self.data_dir, "server.log"), "wb")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.wait_ready()
        self.credentials = self.read_credentials()

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"berth exited early; log: {self.read_log()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"berth did not become healthy; log: {self.read_log()}")

    def read_log(self):
        with open(os.path.join(self.data_dir, "server.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def read_credentials(self):
        out = subprocess.run(
            [BINARY, "credentials", "--data-dir", self.data_dir, "--listen", f"127.0.0.1:{self.port}"],
            check=True, capture_output=True, text=True,
        ).stdout
        values = {}
        for line in out.splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export "):].partition("=")
                values[key] = value
        return values

    def environ(self):
        return dict(self.credentials)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="module", params=BACKENDS)
def berth(request):
    yield from serving(Server(request.param))


def serving(server):
    """Points boto3 and the SDK at `server` while the caller's fixture lasts, then stops it."""
    saved = {k: os.environ.get(k) for k in list(server.environ()) + ["AWS_SESSION_TOKEN", "AWS_PROFILE"]}
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(server.environ())
    # boto3's default session caches credentials; each server has its own keys.
    boto3.DEFAULT_SESSION = None
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    boto3.DEFAULT_SESSION = None
    server.stop()


@pytest.fixture
def cp(berth):
    return boto3.client("bedrock-agentcore-control")


@pytest.fixture
def dp(berth):
    return boto3.client("bedrock-agentcore")


def unique(prefix="m"):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def unchecked_cp(berth):
    """A control-plane client that skips boto3's own parameter validation, so bad input
    reaches the server."""
    from botocore.config import Config
    return boto3.client("bedrock-agentcore-control", config=Config(parameter_validation=False))


@pytest.fixture
def unchecked_dp(berth):
    from botocore.config import Config
    return boto3.client("bedrock-agentcore", config=Config(parameter_validation=False))
