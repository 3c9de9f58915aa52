"""Runtime container images (`containerConfiguration`): the test builds a small OCI image itself
(a static agent binary from agents/image/agent.rs, compiled here) and runs it from a local image
layout, from an archive of one, and pulled from a registry the test serves; a layer that
reaches outside the image root fails the build."""

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import Server, serving

AGENT_SOURCE = os.path.join(os.path.dirname(__file__), "agents", "image", "agent.rs")
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]


@pytest.fixture(scope="module")
def server():
    server = Server("sqlite")
    yield from serving(server)


def tar_layer(entries):
    """A gzipped tar of (name, bytes or None for a directory, mode) entries, names as given."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return raw.getvalue(), gzip.compress(raw.getvalue(), mtime=0)


class Layout:
    """Writes an OCI image layout: blobs by digest, a manifest, and index.json naming it."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)

    def blob(self, data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    def image(self, layers, config, ref="v1"):
        config_blob = self.blob(json.dumps({
            "architecture": ARCH, "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest() for raw, _ in layers]},
        }).encode())
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": dict(config_blob, mediaType="application/vnd.oci.image.config.v1+json"),
            "layers": [dict(self.blob(gz), mediaType="application/vnd.oci.image.layer.v1.tar+gzip") for _, gz in layers],
        }
        manifest_blob = self.blob(json.dumps(manifest).encode())
        with open(os.path.join(self.path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [dict(
                manifest_blob, mediaType="application/vnd.oci.image.manifest.v1+json",
                annotations={"org.opencontainers.image.ref.name": ref})]}, f)
        return manifest_blob["digest"], json.dumps(manifest).encode()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The agent image as a layout, an archive of it, and its manifest."""
    work = tmp_path_factory.mktemp("image")
    binary = work / "agent"
    subprocess.run(["rustc", "--edition", "2024", "-O", "-C", "target-feature=+crt-static", AGENT_SOURCE, "-o", str(binary)],
                   check=True, capture_output=True, timeout=300)
    base = tar_layer([("etc/", None, 0o755), ("etc/agent-release", b"berth test image 1\n", 0o644),
                      ("agent", binary.read_bytes(), 0o755), ("srv/", None, 0o755), ("etc/stale", b"x", 0o644)])
    # A second layer replaces the release file and deletes one from the first (a whiteout).
    top = tar_layer([("etc/agent-release", b"berth test image 2\n", 0o644), ("etc/.wh.stale", b"", 0o644)])
    layout = Layout(str(work / "layout"))
    digest, manifest = layout.image([base, top], {
        "Entrypoint": ["/agent"], "Env": ["PATH=/usr/bin:/bin", "GREETING=from the image"], "WorkingDir": "/srv"})
    archive = work / "agent.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout.path, arcname=".")
    return {"layout": layout.path, "archive": str(archive), "digest": digest, "manifest": manifest}


class Registry:
    """Serves one image layout over the OCI distribution API (anonymous pulls)."""

    def __init__(self, layout, repository):
        self.layout, self.repository = layout, repository
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handler(self):
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                prefix = f"/v2/{registry.repository}/"
                if not self.path.startswith(prefix):
                    self.send_error(404)
                    return
                kind, _, ref = self.path[len(prefix):].partition("/")
                with open(os.path.join(registry.layout, "index.json")) as f:
                    tagged = json.load(f)["manifests"][0]["digest"]
                digest = tagged if (kind == "manifests" and ref == "v1") else ref
                path = os.path.join(registry.layout, "blobs", "sha256", digest.removeprefix("sha256:"))
                if not os.path.exists(path):
                    self.send_error(404)
                    return
                data = open(path, "rb").read()
                self.send_response(200)
                if kind == "manifests":
                    self.send_header("content-type", "application/vnd.oci.image.manifest.v1+json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    def stop(self):
        self.server.shutdown()


def create(cp, uri):
    return cp.create_agent_runtime(
        agentRuntimeName="image_" + uuid.uuid4().hex[:8], roleArn="arn:aws:iam::123456789012:role/agent",
        agentRuntimeArtifact={"containerConfiguration": {"containerUri": uri}},
        networkConfiguration={"networkMode": "PUBLIC"}, environmentVariables={"EXTRA": "1"},
    )


def settle(cp, runtime_id):
    deadline = time.time() + 300
    while (got := cp.get_agent_runtime(agentRuntimeId=runtime_id))["status"] == "CREATING":
        assert time.time() < deadline
        time.sleep(0.3)
    return got


def invoke(dp, arn, sid):
    response = dp.invoke_agent_runtime(agentRuntimeArn=arn, runtimeSessionId=sid, payload=b'{"hello": 1}')
    return json.loads(response["response"].read())


def test_images_from_a_layout_an_archive_and_a_registry(server, image):
    cp, dp = boto3.client("bedrock-agentcore-control"), boto3.client("bedrock-agentcore")
    registry = Registry(image["layout"], "agents/echo")
    try:
        uris = [f"oci:{image['layout']}:v1", f"oci-archive:{image['archive']}",
                f"localhost:{registry.port}/agents/echo:v1", f"localhost:{registry.port}/agents/echo@{image['digest']}"]
        for uri in uris:
            created = create(cp, uri)
            got = settle(cp, created["agentRuntimeId"])
            assert got["status"] == "READY", (uri, got.get("failureReason"))
            assert got["agentRuntimeArtifact"] == {"containerConfiguration": {"containerUri": uri}}
            sid = "image-session-" + uuid.uuid4().hex
            first, second = invoke(dp, created["agentRuntimeArn"], sid), invoke(dp, created["agentRuntimeArn"], sid)
            # The image's root, entrypoint, Env and WorkingDir; later layers win; one process per session.
            assert first["release"] == "berth test image 2", uri
            assert (first["greeting"], first["cwd"], first["region"]) == ("from the image", "/srv", "us-east-1")
            assert json.loads(first["payload"]) == {"hello": 1}
            assert (second["count"], second["pid"]) == (2, first["pid"])
            # Commands run in the image's root: this image has no /bin/sh, which the error says.
            with pytest.raises(ClientError) as no_shell:
                dp.invoke_agent_runtime_command(agentRuntimeArn=created["agentRuntimeArn"], runtimeSessionId=sid,
                                                body={"command": "true"})
            assert no_shell.value.response["Error"]["Code"] == "RuntimeClientError"
            assert "/bin/sh" in no_shell.value.response["Error"]["Message"]
        # The same image under gVisor (needs runsc, which `make test` installs).
        cp.tag_resource(resourceArn=created["agentRuntimeArn"], tags={"berth:isolation": "gvisor"})
        under_gvisor = invoke(dp, created["agentRuntimeArn"], "image-gvisor-" + uuid.uuid4().hex)
        assert (under_gvisor["release"], under_gvisor["cwd"], under_gvisor["count"]) == ("berth test image 2", "/srv", 1)
    finally:
        registry.stop()


def test_hostile_or_broken_images_fail_the_build_with_a_reason(server, image, tmp_path):
    cp = boto3.client("bedrock-agentcore-control")
    escape = Layout(str(tmp_path / "escape"))
    escape.image([tar_layer([("../../escaped", b"x", 0o644)])], {"Entrypoint": ["/agent"]})
    through_link = Layout(str(tmp_path / "link"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        link = tarfile.TarInfo("etc")
        link.type, link.linkname = tarfile.SYMTYPE, "/"
        tar.addfile(link)
        payload = tarfile.TarInfo("etc/escaped")
        payload.size = 1
        tar.addfile(payload, io.BytesIO(b"x"))
    through_link.image([(raw.getvalue(), gzip.compress(raw.getvalue()))], {"Entrypoint": ["/agent"]})
    cases = {
        f"oci:{escape.path}": "leaves the image root",
        f"oci:{through_link.path}": "symbolic link",
        f"oci:{image['layout']}:no-such-tag": "no manifest named `no-such-tag`",
        f"oci:{tmp_path}/missing": "not an OCI image layout",
        "localhost:1/agents/none:v1": "pulling",
    }
    for uri, reason in cases.items():
        got = settle(cp, create(cp, uri)["agentRuntimeId"])
        assert got["status"] == "CREATE_FAILED" and reason in got["failureReason"], (uri, got.get("failureReason"))
    assert not os.path.exists(os.path.join(server.data_dir, "escaped"))
    assert not os.path.exists("/escaped") and not os.path.exists(str(tmp_path / "escaped"))
    with pytest.raises(ClientError) as bad:
        create(cp, "Not A Reference!")
    assert bad.value.response["Error"]["Code"] == "ValidationException"
