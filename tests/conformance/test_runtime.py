"""Runtime conformance (spec §7 flows 1, 2 and 15, and the runtime contract of §3), driven
with boto3 and the `berth deploy` / `berth invoke` CLI against real sandboxes."""

import json
import os
import subprocess
import time
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import BINARY, Server, serving

AGENT = os.path.join(os.path.dirname(__file__), "agents", "basic")


@pytest.fixture(scope="module")
def server():
    # Runtime tests build real environments; once, on SQLite, is enough for the wire contract.
    server = Server("sqlite")
    yield from serving(server)


@pytest.fixture(scope="module")
def cp(server):
    return boto3.client("bedrock-agentcore-control")


@pytest.fixture(scope="module")
def dp(server):
    return boto3.client("bedrock-agentcore")


def berth_cli(server, *args, check=True):
    return subprocess.run(
        [BINARY, *args, "--data-dir", server.data_dir, "--listen", f"127.0.0.1:{server.port}"],
        capture_output=True, text=True, timeout=900, check=check,
    )


@pytest.fixture(scope="module")
def agent(server):
    """The basic agent, deployed with `berth deploy`."""
    name = "conformance_" + uuid.uuid4().hex[:8]
    out = berth_cli(server, "deploy", AGENT, "--name", name)
    deployed = json.loads(out.stdout)
    assert deployed["status"] == "READY" and deployed["agentRuntimeVersion"] == "1"
    deployed["name"] = name
    return deployed


def session_id():
    return "conformance-session-" + uuid.uuid4().hex


def invoke(dp, agent, payload, sid, **kwargs):
    response = dp.invoke_agent_runtime(
        agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId=sid, payload=json.dumps(payload), **kwargs
    )
    return response, json.loads(response["response"].read())


def test_flow_1_deploy_invoke_session_affinity_and_stop(cp, dp, agent):
    runtime = cp.get_agent_runtime(agentRuntimeId=agent["agentRuntimeId"])
    assert runtime["status"] == "READY"
    assert runtime["lifecycleConfiguration"] == {"idleRuntimeSessionTimeout": 900, "maxLifetime": 28800}
    endpoint = cp.get_agent_runtime_endpoint(agentRuntimeId=agent["agentRuntimeId"], endpointName="DEFAULT")
    assert endpoint["status"] == "READY" and endpoint["liveVersion"] == "1"

    sid = session_id()
    response, first = invoke(dp, agent, {"op": "count"}, sid, qualifier="DEFAULT")
    assert response["runtimeSessionId"] == sid
    assert response["contentType"] == "application/json"
    assert first["count"] == 1 and first["session"] == sid
    _, second = invoke(dp, agent, {"op": "count"}, sid)
    assert second["count"] == 2 and second["pid"] == first["pid"]

    # Another session of the same runtime shares nothing with the first.
    other = session_id()
    _, separate = invoke(dp, agent, {"op": "count"}, other)
    assert separate["count"] == 1
    peek_a = invoke(dp, agent, {"op": "peek"}, sid)[1]
    assert peek_a["home"] == "/workspace" and peek_a["uid"] == 0

    stopped = dp.stop_runtime_session(agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId=sid)
    assert stopped["runtimeSessionId"] == sid
    _, fresh = invoke(dp, agent, {"op": "count"}, sid)
    assert fresh["count"] == 1, "a stopped session starts over in a new sandbox"
    with pytest.raises(ClientError) as missing:
        dp.stop_runtime_session(agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId=session_id())
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_flow_2_streaming_passes_through_without_buffering(dp, agent):
    started = time.time()
    response = dp.invoke_agent_runtime(
        agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId=session_id(),
        accept="text/event-stream, application/json",
        payload=json.dumps({"op": "stream", "words": ["one", "two", "three", "four"]}),
    )
    assert response["contentType"].startswith("text/event-stream")
    frames, arrivals = [], []
    # iter_lines reads 1024-byte chunks by default, which would wait for the whole stream here.
    for line in response["response"].iter_lines(chunk_size=1):
        if line.startswith(b"data: "):
            frames.append(json.loads(line[len(b"data: "):]))
            arrivals.append(time.time() - started)
    assert [f["delta"] for f in frames] == ["one", "two", "three", "four"]
    # Each word is produced 0.3 s after the last; buffering would deliver them all at the end.
    assert arrivals[-1] - arrivals[0] > 0.6, arrivals


def test_large_payloads_reach_the_agent_only_once_verified(dp, agent):
    sid = session_id()
    # Past a megabyte the payload waits on disk for its signature check, then streams.
    data = "x" * (8 * 1024 * 1024)
    assert invoke(dp, agent, {"op": "size", "data": data}, sid)[1]["size"] == len(data)

    # A body changed after it was signed is refused, and never reaches the agent: had the
    # "count" below run, the session's count would be 2.
    tampering = boto3.client("bedrock-agentcore")

    def tamper(request, **_):
        request.body = request.body.replace(b'"xount"', b'"count"')

    tampering.meta.events.register("before-send.bedrock-agentcore.InvokeAgentRuntime", tamper)
    with pytest.raises(ClientError) as refused:
        tampering.invoke_agent_runtime(
            agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId=sid,
            payload=json.dumps({"op": "xount", "pad": "y" * (2 * 1024 * 1024)}),
        )
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert invoke(dp, agent, {"op": "count"}, sid)[1]["count"] == 1


def test_errors_in_the_agent(dp, agent):
    with pytest.raises(ClientError) as failed:
        invoke(dp, agent, {"op": "raise"}, session_id())
    error = failed.value.response
    assert error["Error"]["Code"] == "RuntimeClientError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "500" in error["Error"]["Message"]

    # An exception inside a stream ends it with the SDK's error frame; the stream itself is 200.
    response = dp.invoke_agent_runtime(
        agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId=session_id(),
        payload=json.dumps({"op": "stream", "words": ["a"], "fail": True}),
    )
    lines = [json.loads(l[6:]) for l in response["response"].iter_lines() if l.startswith(b"data: ")]
    assert lines[0] == {"delta": "a"}
    assert "the stream broke" in json.dumps(lines[-1])


def test_agent_calls_memory_with_scoped_credentials(cp, dp, agent):
    memory = cp.create_memory(name="runtime_" + uuid.uuid4().hex[:8], eventExpiryDuration=7)["memory"]
    sid = session_id()
    _, answer = invoke(dp, agent, {"op": "memory", "memoryId": memory["id"]}, sid)
    assert answer["events"] == 1
    assert "AccessDenied" in answer["control"], answer
    events = dp.list_events(memoryId=memory["id"], actorId="agent", sessionId=sid, includePayloads=True)["events"]
    assert events[0]["payload"][0]["conversational"]["content"]["text"] == "written from inside the sandbox"


def test_cli_invoke_streams(server, agent):
    out = berth_cli(server, "invoke", agent["name"], json.dumps({"op": "stream", "words": ["x", "y"]}))
    assert 'data: {"delta": "x"}' in out.stdout and 'data: {"delta": "y"}' in out.stdout


def command_events(dp, agent, sid, command, timeout=None):
    body = {"command": command} if timeout is None else {"command": command, "timeout": timeout}
    response = dp.invoke_agent_runtime_command(agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId=sid, body=body)
    assert response["runtimeSessionId"] == sid
    return [event["chunk"] for event in response["stream"]]


def test_flow_23_commands_run_in_the_session_sandbox(dp, agent):
    sid = session_id()
    # The agent's state and the command's sandbox are one: a file the agent can see.
    _, counted = invoke(dp, agent, {"op": "count"}, sid)
    chunks = command_events(dp, agent, sid, "ls /app; echo to-stderr >&2; echo $PPID > /tmp/marker; exit 3")
    assert chunks[0] == {"contentStart": {}}
    stdout = "".join(c["contentDelta"].get("stdout", "") for c in chunks if "contentDelta" in c)
    stderr = "".join(c["contentDelta"].get("stderr", "") for c in chunks if "contentDelta" in c)
    assert "main.py" in stdout.split() and stderr == "to-stderr\n"
    assert chunks[-1] == {"contentStop": {"exitCode": 3, "status": "COMPLETED"}}
    # Same sandbox: the file written by the first command is there for the second, and the
    # agent's process is visible; another session sees neither.
    same = command_events(dp, agent, sid, f"cat /tmp/marker >/dev/null && kill -0 {counted['pid']} && echo same")
    assert same[-1]["contentStop"]["exitCode"] == 0 and any(c.get("contentDelta", {}).get("stdout") == "same\n" for c in same)
    other = command_events(dp, agent, session_id(), "test -e /tmp/marker")
    assert other[-1]["contentStop"]["exitCode"] == 1
    # Output streams while the command runs, and a command past its timeout is ended.
    started = time.time()
    timed = command_events(dp, agent, sid, "echo begin; sleep 100", timeout=1)
    assert time.time() - started < 10
    assert timed[1] == {"contentDelta": {"stdout": "begin\n"}}
    assert timed[-1] == {"contentStop": {"exitCode": -1, "status": "TIMED_OUT"}}
    # The session keeps working after all that.
    assert invoke(dp, agent, {"op": "count"}, sid)[1]["count"] == 2

    from botocore.config import Config
    unchecked = boto3.client("bedrock-agentcore", config=Config(parameter_validation=False))
    for body, field in [({"command": "ls", "timeout": 0}, "body.timeout"), ({"command": ""}, "body.command")]:
        with pytest.raises(ClientError) as bad:
            unchecked.invoke_agent_runtime_command(agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId=sid, body=body)
        assert bad.value.response["Error"]["Code"] == "ValidationException", body
    with pytest.raises(ClientError) as missing:
        dp.invoke_agent_runtime_command(agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId=sid,
                                        qualifier="nope", body={"command": "ls"})
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_versions_endpoints_and_bad_input(server, cp, dp, agent):
    runtime_id = agent["agentRuntimeId"]
    with pytest.raises(ClientError) as duplicate:
        cp.create_agent_runtime(
            agentRuntimeName=agent["name"], roleArn="arn:aws:iam::123456789012:role/r",
            agentRuntimeArtifact=cp.get_agent_runtime(agentRuntimeId=runtime_id)["agentRuntimeArtifact"],
        )
    assert duplicate.value.response["Error"]["Code"] == "ConflictException"

    # Version 2 runs crash.py: it builds, but its sessions die at start.
    current = cp.get_agent_runtime(agentRuntimeId=runtime_id)
    artifact = current["agentRuntimeArtifact"]
    artifact["codeConfiguration"]["entryPoint"] = ["crash.py"]
    updated = cp.update_agent_runtime(
        agentRuntimeId=runtime_id, agentRuntimeArtifact=artifact, roleArn=current["roleArn"],
        networkConfiguration={"networkMode": "PUBLIC"},
    )
    assert updated["status"] == "UPDATING" and updated["agentRuntimeVersion"] == "2"
    prod = cp.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="prod", agentRuntimeVersion="1")
    assert prod["targetVersion"] == "1"
    deadline = time.time() + 600
    while cp.get_agent_runtime(agentRuntimeId=runtime_id)["status"] == "UPDATING" and time.time() < deadline:
        time.sleep(1)
    assert cp.get_agent_runtime(agentRuntimeId=runtime_id)["status"] == "READY"
    versions = cp.list_agent_runtime_versions(agentRuntimeId=runtime_id)["agentRuntimes"]
    assert [v["agentRuntimeVersion"] for v in versions] == ["2", "1"]
    assert cp.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="DEFAULT")["liveVersion"] == "2"
    names = {e["name"] for e in cp.list_agent_runtime_endpoints(agentRuntimeId=runtime_id)["runtimeEndpoints"]}
    assert names == {"DEFAULT", "prod"}

    # prod still serves version 1; DEFAULT now serves the crashing version 2.
    assert invoke(dp, agent, {"op": "count"}, session_id(), qualifier="prod")[1]["count"] == 1
    with pytest.raises(ClientError) as crashed:
        invoke(dp, agent, {"op": "count"}, session_id())
    assert crashed.value.response["Error"]["Code"] == "RuntimeClientError"
    assert "giving up at start" in crashed.value.response["Error"]["Message"]

    cases = [
        (dict(qualifier="nope"), "ResourceNotFoundException"),
        (dict(agentRuntimeArn=agent["agentRuntimeArn"].replace(runtime_id, "missing-AbCdEfGhIj")), "ResourceNotFoundException"),
    ]
    for extra, code in cases:
        args = dict(agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId=session_id(), payload=b"{}")
        args.update(extra)
        with pytest.raises(ClientError) as bad:
            dp.invoke_agent_runtime(**args)
        assert bad.value.response["Error"]["Code"] == code, extra
    from botocore.config import Config
    unchecked = boto3.client("bedrock-agentcore", config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as short:
        unchecked.invoke_agent_runtime(agentRuntimeArn=agent["agentRuntimeArn"], runtimeSessionId="short", payload=b"{}")
    assert short.value.response["Error"]["Code"] == "ValidationException"
    unchecked_cp = boto3.client("bedrock-agentcore-control", config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as bad_name:
        unchecked_cp.create_agent_runtime(
            agentRuntimeName="9-bad-name", roleArn="arn:aws:iam::123456789012:role/r",
            agentRuntimeArtifact=artifact,
        )
    assert bad_name.value.response["Error"]["Code"] == "ValidationException"


def test_flow_15_versions_and_named_endpoints_with_the_sdk(server, cp, dp, agent):
    from bedrock_agentcore.runtime import AgentCoreRuntimeClient

    client = AgentCoreRuntimeClient(region=boto3.Session().region_name)
    artifact = cp.get_agent_runtime(agentRuntimeId=agent["agentRuntimeId"], agentRuntimeVersion="1")["agentRuntimeArtifact"]
    definition = dict(agentRuntimeArtifact=artifact, roleArn="arn:aws:iam::123456789012:role/agent",
                      networkConfiguration={"networkMode": "PUBLIC"})
    created = client.create_agent_runtime_and_wait(
        agentRuntimeName="flow15_" + uuid.uuid4().hex[:6], environmentVariables={"BUILD": "one"}, **definition)
    runtime_id = created["agentRuntimeId"]
    updated = client.update_agent_runtime_and_wait(agentRuntimeId=runtime_id, environmentVariables={"BUILD": "two"}, **definition)
    assert (updated["status"], updated["agentRuntimeVersion"]) == ("READY", "2")
    prod = client.create_agent_runtime_endpoint_and_wait(agentRuntimeId=runtime_id, name="prod", agentRuntimeVersion="1")
    assert (prod["status"], prod["liveVersion"]) == ("READY", "1")

    def build(qualifier):
        target = {"agentRuntimeArn": created["agentRuntimeArn"]}
        return invoke(dp, target, {"op": "env", "name": "BUILD"}, session_id(), qualifier=qualifier)[1]["value"]

    assert (build("prod"), build("DEFAULT")) == ("one", "two")
    versions = cp.list_agent_runtime_versions(agentRuntimeId=runtime_id)["agentRuntimes"]
    assert [v["agentRuntimeVersion"] for v in versions] == ["2", "1"]
    moved = cp.update_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod", agentRuntimeVersion="2")
    assert (moved["liveVersion"], moved["targetVersion"]) == ("2", "2")
    assert client.get_aggregated_status(runtime_id, "prod")["endpoint"]["status"] == "READY"
    assert build("prod") == "two"

    client.teardown_endpoint_and_runtime(runtime_id, endpoint_name="prod")
    with pytest.raises(ClientError) as gone:
        cp.get_agent_runtime(agentRuntimeId=runtime_id)
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_missing_bundle_fails_the_build_with_a_reason(cp):
    created = cp.create_agent_runtime(
        agentRuntimeName="nobundle_" + uuid.uuid4().hex[:6], roleArn="arn:aws:iam::123456789012:role/r",
        agentRuntimeArtifact={"codeConfiguration": {
            "code": {"s3": {"bucket": "nowhere", "prefix": "missing.zip"}},
            "runtime": "PYTHON_3_11", "entryPoint": ["main.py"]}},
    )
    assert created["status"] == "CREATING"
    deadline = time.time() + 60
    while (got := cp.get_agent_runtime(agentRuntimeId=created["agentRuntimeId"]))["status"] == "CREATING":
        assert time.time() < deadline
        time.sleep(0.2)
    assert got["status"] == "CREATE_FAILED"
    assert "s3://nowhere/missing.zip" in got["failureReason"]


def test_isolation_tier_per_runtime(server, cp, dp, agent):
    """`berth:isolation = gvisor` puts a runtime's new sessions under gVisor (needs runsc,
    which `make test` installs)."""
    # The endpoint serving the working version: `prod` once the versions test moved DEFAULT on.
    endpoints = cp.list_agent_runtime_endpoints(agentRuntimeId=agent["agentRuntimeId"])["runtimeEndpoints"]
    qualifier = "prod" if any(e["name"] == "prod" for e in endpoints) else "DEFAULT"
    cp.tag_resource(resourceArn=agent["agentRuntimeArn"], tags={"berth:isolation": "gvisor"})
    try:
        sid = session_id()
        _, first = invoke(dp, agent, {"op": "count"}, sid, qualifier=qualifier)
        _, second = invoke(dp, agent, {"op": "count"}, sid, qualifier=qualifier)
        assert (first["count"], second["count"]) == (1, 2)
        health = json.loads(__import__("urllib.request").request.urlopen(f"{server.endpoint}/health").read())
        session = next(s for s in health["runtimeSessions"] if s["runtimeSessionId"] == sid)
        assert session["isolation"] == "gvisor"
        assert session["usage"]["cpuSeconds"] > 0 and session["usage"]["memoryPeakBytes"] > 0
        metrics = __import__("urllib.request").request.urlopen(f"{server.endpoint}/metrics").read().decode()
        series = (f'berth_runtime_session_cpu_seconds_total{{agent_runtime_id="{agent["agentRuntimeId"]}",'
                  f'runtime_session_id="{sid}",isolation="gvisor"}} ')
        line = next(l for l in metrics.splitlines() if l.startswith(series))
        assert float(line.split()[-1]) > 0
    finally:
        cp.untag_resource(resourceArn=agent["agentRuntimeArn"], tagKeys=["berth:isolation"])


def test_delete_then_not_found(server, cp, dp):
    name = "todelete_" + uuid.uuid4().hex[:6]
    deployed = json.loads(berth_cli(server, "deploy", AGENT, "--name", name).stdout)
    invoke(dp, deployed, {"op": "count"}, session_id())
    deleted = cp.delete_agent_runtime(agentRuntimeId=deployed["agentRuntimeId"])
    assert deleted["status"] == "DELETING"
    deadline = time.time() + 60
    while True:
        try:
            cp.get_agent_runtime(agentRuntimeId=deployed["agentRuntimeId"])
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ResourceNotFoundException"
            break
        assert time.time() < deadline
        time.sleep(0.2)
    health = json.loads(__import__("urllib.request").request.urlopen(f"{server.endpoint}/health").read())
    assert all(s["agentRuntimeId"] != deployed["agentRuntimeId"] for s in health["runtimeSessions"])
