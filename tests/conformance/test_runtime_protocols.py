"""Runtime protocols (spec §3.5, §7 flows 16 and 20): an MCP server and an A2A agent hosted as
runtimes, reached with the official `mcp` client and through boto3."""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import BINARY, Server, free_port, serving
from oidc_issuer import Issuer

AGENTS = os.path.join(os.path.dirname(__file__), "agents")


TLS_HOST = "agentcore.local.api.aws"


@pytest.fixture(scope="module")
def server():
    tls_port = free_port()
    server = Server("sqlite", config=f'[tls]\nenabled = true\nlisten = "127.0.0.1:{tls_port}"\n')
    server.tls_endpoint = f"https://{TLS_HOST}:{tls_port}"
    yield from serving(server)


@pytest.fixture(scope="module")
def dp(server):
    return boto3.client("bedrock-agentcore")


def deploy(server, agent, protocol):
    name = f"{protocol.lower()}_" + uuid.uuid4().hex[:8]
    out = subprocess.run(
        [BINARY, "deploy", os.path.join(AGENTS, agent), "--name", name, "--protocol", protocol,
         "--data-dir", server.data_dir, "--listen", f"127.0.0.1:{server.port}"],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def invocation_url(server, arn):
    return f"{server.endpoint}/runtimes/{urllib.parse.quote(arn, safe='')}/invocations?qualifier=DEFAULT"


class AwsSigV4(httpx.Auth):
    """Signs each request with the caller's AWS credentials, as an MCP client does to reach an
    IAM-authorized AgentCore runtime."""

    requires_request_body = True
    UNSIGNED = {"connection", "user-agent", "accept-encoding"}

    def __init__(self, region):
        self.credentials = boto3.Session().get_credentials()
        self.region = region

    def auth_flow(self, request):
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self.UNSIGNED}
        signed = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=headers)
        SigV4Auth(self.credentials, "bedrock-agentcore", self.region).add_auth(signed)
        request.headers.update(dict(signed.headers))
        yield request


@pytest.fixture(scope="module")
def mcp_runtime(server):
    return deploy(server, "mcp", "MCP")


@pytest.fixture(scope="module")
def a2a_runtime(server):
    return deploy(server, "a2a", "A2A")


def test_flow_16_mcp_server_through_the_official_client(server, mcp_runtime):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    url = invocation_url(server, mcp_runtime["agentRuntimeArn"])

    async def session_calls():
        http = create_mcp_http_client(auth=AwsSigV4(boto3.Session().region_name))
        async with http, streamable_http_client(url, http_client=http) as (read, write, session_id):
            async with ClientSession(read, write) as session:
                await session.initialize()
                mcp_session = session_id()
                tools = {t.name for t in (await session.list_tools()).tools}
                added = await session.call_tool("add_numbers", {"a": 2, "b": 40})
                first = await session.call_tool("sandbox_pid", {})
                second = await session.call_tool("sandbox_pid", {})
                return mcp_session, tools, added, first, second

    mcp_session, tools, added, first, second = asyncio.run(session_calls())
    # The platform gave the session an id, and every request of the session reached one sandbox.
    assert mcp_session and len(mcp_session) >= 33
    assert tools == {"add_numbers", "sandbox_pid"}
    assert added.content[0].text == "42" and not added.isError
    first, second = json.loads(first.content[0].text), json.loads(second.content[0].text)
    assert second["pid"] == first["pid"] and second["calls"] == first["calls"] + 1


def test_flow_16_mcp_through_boto3_with_session_headers(dp, mcp_runtime):
    arn = mcp_runtime["agentRuntimeArn"]
    sid = "mcp-boto3-session-" + uuid.uuid4().hex

    def call(method, params, request_id, mcp_session=None):
        extra = {"mcpSessionId": mcp_session} if mcp_session else {}
        response = dp.invoke_agent_runtime(
            agentRuntimeArn=arn, runtimeSessionId=sid, mcpProtocolVersion="2025-06-18",
            accept="application/json, text/event-stream", contentType="application/json",
            payload=json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}), **extra,
        )
        body = response["response"].read().decode()
        if response["contentType"].startswith("text/event-stream"):
            body = next(line[5:] for line in body.splitlines() if line.startswith("data:"))
        return response, json.loads(body)

    response, initialized = call("initialize", {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "boto3", "version": "1"}}, 1)
    assert initialized["result"]["serverInfo"]["name"]
    assert response["mcpSessionId"] == sid  # the platform's id, as the server chose none
    _, listed = call("tools/list", {}, 2, mcp_session="caller-chosen-mcp-session")
    assert {t["name"] for t in listed["result"]["tools"]} == {"add_numbers", "sandbox_pid"}
    _, called = call("tools/call", {"name": "add_numbers", "arguments": {"a": 1, "b": 2}}, 3)
    assert called["result"]["content"][0]["text"] == "3"


def test_flow_20_a2a_agent_card_and_message(server, dp, a2a_runtime, http_runtime):
    from a2a.types import AgentCard

    arn = a2a_runtime["agentRuntimeArn"]
    sid = "a2a-session-" + uuid.uuid4().hex
    got = dp.get_agent_card(agentRuntimeArn=arn, runtimeSessionId=sid)
    assert got["runtimeSessionId"] == sid
    card = AgentCard.model_validate(got["agentCard"])
    # AGENTCORE_RUNTIME_URL was injected: the card advertises Berth's invocation URL.
    assert card.url == f"{server.endpoint}/runtimes/{urllib.parse.quote(arn, safe='')}/invocations"

    message = {"jsonrpc": "2.0", "id": "req-1", "method": "message/send", "params": {"message": {
        "role": "user", "messageId": uuid.uuid4().hex, "parts": [{"kind": "text", "text": "hello berth"}]}}}
    response = dp.invoke_agent_runtime(agentRuntimeArn=arn, runtimeSessionId=sid, payload=json.dumps(message))
    answer = json.loads(response["response"].read())
    assert answer["id"] == "req-1"
    assert answer["result"]["parts"][0]["text"] == "htreb olleh"

    # A card from a runtime that is not A2A is a clear error, not a proxied 404.
    with pytest.raises(ClientError) as not_a2a:
        dp.get_agent_card(agentRuntimeArn=http_runtime["agentRuntimeArn"])
    assert not_a2a.value.response["Error"]["Code"] == "ValidationException"
    assert "A2A" in not_a2a.value.response["Error"]["Message"]


@pytest.fixture(scope="module")
def issuer():
    issuer = Issuer()
    yield issuer
    issuer.stop()


def wait_ready(cp, runtime_id):
    deadline = time.time() + 600
    while (status := cp.get_agent_runtime(agentRuntimeId=runtime_id)["status"]) not in ("READY", "CREATE_FAILED"):
        assert time.time() < deadline
        time.sleep(1)
    assert status == "READY", cp.get_agent_runtime(agentRuntimeId=runtime_id).get("failureReason")


@pytest.fixture(scope="module")
def http_runtime(server):
    return deploy(server, "basic", "HTTP")


@pytest.fixture(scope="module")
def jwt_runtime(server, http_runtime, issuer):
    """The basic agent again, authorized by the test issuer's tokens."""
    cp = boto3.client("bedrock-agentcore-control")
    artifact = cp.get_agent_runtime(agentRuntimeId=http_runtime["agentRuntimeId"])["agentRuntimeArtifact"]
    created = cp.create_agent_runtime(
        agentRuntimeName="jwt_" + uuid.uuid4().hex[:8], agentRuntimeArtifact=artifact,
        roleArn="arn:aws:iam::123456789012:role/agent", networkConfiguration={"networkMode": "PUBLIC"},
        authorizerConfiguration={"customJWTAuthorizer": {
            "discoveryUrl": issuer.discovery_url, "allowedClients": ["berth-client"], "allowedAudience": ["berth-api"]}},
        requestHeaderConfiguration={"requestHeaderAllowlist": [
            "Authorization", "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant", "X-Team"]},
    )
    wait_ready(cp, created["agentRuntimeId"])
    created["artifact"] = artifact
    return created


def test_flow_9_jwt_runtime_with_header_allowlist(server, dp, issuer, http_runtime, jwt_runtime):
    cp = boto3.client("bedrock-agentcore-control")
    arn, artifact = jwt_runtime["agentRuntimeArn"], jwt_runtime["artifact"]
    good = issuer.token(client_id="berth-client", aud="berth-api")

    def post(token, target=arn, **headers):
        headers = {"Content-Type": "application/json",
                   "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "jwt-session-" + "x" * 30, **headers}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.post(invocation_url(server, target), headers=headers, content=json.dumps({"op": "headers"}), timeout=120)

    answer = post(good, **{"X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant": "acme", "X-Team": "blue", "Cookie": "c=1"})
    assert answer.status_code == 200, answer.text
    seen = answer.json()["headers"]
    # The allowlisted headers reach the agent, the bearer token included; the rest do not.
    assert seen["authorization"] == f"Bearer {good}"
    assert seen["x-amzn-bedrock-agentcore-runtime-custom-tenant"] == "acme" and seen["x-team"] == "blue"
    assert "cookie" not in seen

    # A SigV4-signed call to the JWT runtime, and a bearer call to a SigV4 runtime, are refused.
    with pytest.raises(ClientError) as signed:
        dp.invoke_agent_runtime(agentRuntimeArn=arn, payload=b"{}")
    assert signed.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "Authorization method mismatch" in signed.value.response["Error"]["Message"]
    mismatch = post(good, target=http_runtime["agentRuntimeArn"])
    assert mismatch.status_code == 403 and mismatch.headers["x-amzn-errortype"].startswith("AccessDeniedException")

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "wrong client": issuer.token(client_id="someone-else", aud="berth-api"),
        "wrong audience": issuer.token(client_id="berth-client", aud="another-api"),
        "expired": issuer.token(client_id="berth-client", aud="berth-api", lifetime=-600),
        "wrong signature": issuer.token(key=other_key, client_id="berth-client", aud="berth-api"),
        "unknown key": issuer.token(kid="rotated-away", client_id="berth-client", aud="berth-api"),
        "wrong issuer": issuer.token(client_id="berth-client", aud="berth-api", iss="https://evil.example"),
        "not a jwt": "not-a-token",
    }
    for case, token in refused.items():
        response = post(token)
        assert response.status_code == 403, (case, response.status_code, response.text)
        assert response.headers["x-amzn-errortype"].startswith("AccessDeniedException"), case
    # A bearer token opens the runtime data plane only, never the control plane or other services.
    for method, path in [("POST", "/runtimes/"), ("POST", "/memories/")]:
        other = httpx.request(method, f"{server.endpoint}{path}", headers={"Authorization": f"Bearer {good}"}, json={})
        assert other.status_code == 403 and "bearer tokens" in other.text, (path, other.text)
    # No token at all is an unsigned request.
    assert post(None).status_code == 403
    # The server is still healthy for good tokens after all that.
    assert post(good).status_code == 200

    # A malformed custom claim rule is refused when the runtime is created.
    with pytest.raises(ClientError) as malformed:
        cp.create_agent_runtime(
            agentRuntimeName="jwt_" + uuid.uuid4().hex[:8], agentRuntimeArtifact=artifact,
            roleArn="arn:aws:iam::123456789012:role/agent",
            authorizerConfiguration={"customJWTAuthorizer": {"discoveryUrl": issuer.discovery_url, "customClaims": [
                {"inboundTokenClaimName": "groups", "inboundTokenClaimValueType": "STRING_ARRAY",
                 "authorizingClaimMatchValue": {"claimMatchValue": {"matchValueString": "admins"}, "claimMatchOperator": "EQUALS"}}]}},
        )
    assert malformed.value.response["Error"]["Code"] == "ValidationException"
    fields = [f["name"] for f in malformed.value.response.get("fieldList", [])]
    assert fields == ["authorizerConfiguration.customJWTAuthorizer.customClaims[0]"], malformed.value.response


def map_tls_host():
    """Points TLS_HOST at this machine in /etc/hosts, as docs/runtime-protocols.md tells users."""
    with open("/etc/hosts") as hosts:
        if any(line.split()[1:2] == [TLS_HOST] for line in hosts if not line.startswith("#")):
            return
    with open("/etc/hosts", "a") as hosts:
        hosts.write(f"127.0.0.1 {TLS_HOST}\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="maps a host name in /etc/hosts, which needs root")
def test_flow_21_websockets_and_shells_through_the_sdk_helpers_over_tls(server, issuer, http_runtime, jwt_runtime):
    map_tls_host()
    env = dict(os.environ, BEDROCK_AGENTCORE_DP_ENDPOINT=server.tls_endpoint, AWS_REGION="us-east-1",
               SSL_CERT_FILE=os.path.join(server.data_dir, "tls", "ca.pem"))
    token = issuer.token(client_id="berth-client", aud="berth-api")
    ran = subprocess.run(
        [sys.executable, os.path.join(os.path.dirname(__file__), "ws_client.py"),
         http_runtime["agentRuntimeArn"], jwt_runtime["agentRuntimeArn"], token],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    out = json.loads(ran.stdout)
    assert out["url"].startswith(f"wss://{TLS_HOST}:")
    for case in ("sigv4", "sigv4_again", "presigned", "oauth"):
        assert out[case].get("text") == "echo: hello" and out[case]["binary"] == [3, 2, 1], (case, out)
    # The same session id reaches the same session, whichever way the upgrade was signed.
    assert out["sigv4"]["greeting"] == out["sigv4_again"]["greeting"] == out["presigned"]["greeting"]
    assert out["sigv4"]["greeting"].startswith("session ws-session-")
    for case in ("sigv4_to_jwt_runtime", "oauth_to_sigv4_runtime", "tampered", "too_long", "expired"):
        assert out[case] == {"status": 403}, (case, out[case])
    assert out["oversized"] == {"closed": 1009}
    assert out["after_oversized"]["text"] == "echo: hello"

    shells = out["shells"]
    assert "size=43 132" in shells["first"], shells
    assert "size=43 132" in shells["replayed"] and "mark=kept" in shells["state"], shells
    assert shells["kicked"] is True
    assert "bye" in shells["exit_output"] and shells["exit_code"] == 3, shells
    assert shells["presigned_exit"] == 0 and "whoami-ok" in shells["oauth"], shells
    assert shells["sigv4_shell_to_jwt"] == 403
