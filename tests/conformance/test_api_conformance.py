"""Spec §7 flow 25 for the memory operations: idempotent retries, pagination, validation with
fieldList, 404 after delete, resource policies, tags, error decoding; plus authentication and
bad input sent as raw HTTP."""

import json
import urllib.error
import urllib.request
import uuid

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import unique


def wait_active(cp, memory_id):
    cp.get_waiter("memory_created").wait(memoryId=memory_id, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def test_idempotent_create_memory(cp):
    token = str(uuid.uuid4())
    name = unique()
    first = cp.create_memory(name=name, eventExpiryDuration=30, clientToken=token)["memory"]
    again = cp.create_memory(name=name, eventExpiryDuration=30, clientToken=token)["memory"]
    assert again["id"] == first["id"]
    assert again["status"] == "CREATING", "a replay returns the original response"
    with pytest.raises(cp.exceptions.ValidationException) as raised:
        cp.create_memory(name=name, eventExpiryDuration=31, clientToken=token)
    assert raised.value.response["reason"] == "IdempotentParameterMismatchException"
    assert len([m for m in cp.list_memories()["memories"] if m["id"].startswith(name + "-")]) == 1


def test_duplicate_name_matches_the_sdk_expectation(cp):
    name = unique()
    cp.create_memory(name=name, eventExpiryDuration=30)
    with pytest.raises(cp.exceptions.ValidationException) as raised:
        cp.create_memory(name=name, eventExpiryDuration=30)
    assert "already exists" in raised.value.response["Error"]["Message"]

    from bedrock_agentcore.memory import MemoryClient

    memory = MemoryClient(region_name="us-east-1").create_or_get_memory(name=name, strategies=[])
    assert memory["id"].startswith(name + "-")


def test_list_memories_pages_through_the_body(cp):
    created = {cp.create_memory(name=unique(), eventExpiryDuration=30)["memory"]["id"] for _ in range(5)}
    seen = []
    for page in cp.get_paginator("list_memories").paginate(PaginationConfig={"PageSize": 2}):
        assert len(page["memories"]) <= 2
        seen.extend(m["id"] for m in page["memories"])
    assert created <= set(seen)
    assert len(seen) == len(set(seen))
    summary = cp.list_memories(maxResults=1)["memories"][0]
    assert set(summary) >= {"arn", "id", "status", "createdAt", "updatedAt"}


def test_update_memory_strategies_and_statuses(cp):
    memory_id = cp.create_memory(
        name=unique(), eventExpiryDuration=30,
        memoryStrategies=[{"semanticMemoryStrategy": {"name": "facts"}},
                          {"customMemoryStrategy": {"name": "custom", "configuration": {
                              "summaryOverride": {"consolidation": {"appendToPrompt": "be brief", "modelId": "m"}}}}}],
    )["memory"]["id"]
    wait_active(cp, memory_id)
    memory = cp.get_memory(memoryId=memory_id)["memory"]
    strategies = {s["name"]: s for s in memory["strategies"]}
    assert strategies["facts"]["type"] == "SEMANTIC"
    assert strategies["facts"]["status"] == "ACTIVE"
    assert strategies["facts"]["namespaces"] == ["/strategies/{memoryStrategyId}/actors/{actorId}/"]
    assert strategies["custom"]["configuration"]["type"] == "SUMMARY_OVERRIDE"
    assert strategies["custom"]["configuration"]["consolidation"] == {
        "customConsolidationConfiguration": {"summaryConsolidationOverride": {"appendToPrompt": "be brief", "modelId": "m"}}}

    updated = cp.update_memory(
        memoryId=memory_id,
        description="with preferences",
        memoryStrategies={
            "addMemoryStrategies": [{"userPreferenceMemoryStrategy": {"name": "prefs"}}],
            "modifyMemoryStrategies": [{"memoryStrategyId": strategies["facts"]["strategyId"], "description": "facts v2"}],
            "deleteMemoryStrategies": [{"memoryStrategyId": strategies["custom"]["strategyId"]}],
        },
    )
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert updated["memory"]["status"] == "UPDATING"
    states = {s["name"]: s["status"] for s in updated["memory"]["strategies"]}
    assert states == {"facts": "ACTIVE", "custom": "DELETING", "prefs": "CREATING"}
    wait_active(cp, memory_id)
    final = cp.get_memory(memoryId=memory_id)["memory"]
    assert final["description"] == "with preferences"
    assert {s["name"]: s["status"] for s in final["strategies"]} == {"facts": "ACTIVE", "prefs": "ACTIVE"}
    assert [s["description"] for s in final["strategies"] if s["name"] == "facts"] == ["facts v2"]

    with pytest.raises(cp.exceptions.ValidationException):
        cp.update_memory(memoryId=memory_id, memoryStrategies={"deleteMemoryStrategies": [{"memoryStrategyId": "nope-AbCdEfGhIj"}]})
    with pytest.raises(cp.exceptions.ValidationException):
        cp.update_memory(memoryId=memory_id, memoryStrategies={"addMemoryStrategies": [
            {"semanticMemoryStrategy": {"name": "bad", "namespaceTemplates": ["/x/{undeclared}/"]}}]})


def test_delete_then_404(cp, dp):
    memory_id = cp.create_memory(name=unique(), eventExpiryDuration=30)["memory"]["id"]
    wait_active(cp, memory_id)
    dp.create_event(memoryId=memory_id, actorId="a", sessionId="s", eventTimestamp=1714564800,
                    payload=[{"conversational": {"content": {"text": "x"}, "role": "USER"}}])
    deleted = cp.delete_memory(memoryId=memory_id)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert deleted["status"] == "DELETING"
    import time
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            cp.get_memory(memoryId=memory_id)
            time.sleep(0.2)
        except cp.exceptions.ResourceNotFoundException:
            break
    else:
        pytest.fail("memory still visible 20 s after DeleteMemory")
    with pytest.raises(dp.exceptions.ResourceNotFoundException):
        dp.list_events(memoryId=memory_id, actorId="a", sessionId="s")
    with pytest.raises(cp.exceptions.ResourceNotFoundException):
        cp.delete_memory(memoryId=memory_id)


def test_tags_and_resource_policies(cp):
    memory = cp.create_memory(name=unique(), eventExpiryDuration=30, tags={"team": "agents"})["memory"]
    arn = memory["arn"]
    assert cp.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "agents"}
    assert cp.tag_resource(resourceArn=arn, tags={"env": "test", "cost": "1"})["ResponseMetadata"]["HTTPStatusCode"] == 204
    cp.untag_resource(resourceArn=arn, tagKeys=["team", "cost"])
    assert cp.list_tags_for_resource(resourceArn=arn)["tags"] == {"env": "test"}

    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]})
    put = cp.put_resource_policy(resourceArn=arn, policy=policy)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 201 and put["policy"] == policy
    assert cp.get_resource_policy(resourceArn=arn)["policy"] == policy
    assert cp.delete_resource_policy(resourceArn=arn)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(cp.exceptions.ResourceNotFoundException):
        cp.get_resource_policy(resourceArn=arn)

    other_account = arn.replace(arn.split(":")[4], "999999999999")
    with pytest.raises(cp.exceptions.ResourceNotFoundException):
        cp.list_tags_for_resource(resourceArn=other_account)


def test_unimplemented_operations_say_so(cp):
    with pytest.raises(ClientError) as raised:
        cp.list_gateways()
    assert raised.value.response["Error"]["Code"] == "UnknownOperationException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


# ---- authentication -------------------------------------------------------------------------

def signed(berth, method, path, body=b"", key=None, secret=None, headers=None):
    credentials = Credentials(key or berth.credentials["AWS_ACCESS_KEY_ID"], secret or berth.credentials["AWS_SECRET_ACCESS_KEY"])
    request = AWSRequest(method=method, url=berth.endpoint + path, data=body, headers=headers or {})
    SigV4Auth(credentials, "bedrock-agentcore", "us-east-1").add_auth(request)
    return request


def send(berth, request_or_url, method="GET", body=None, headers=None):
    if isinstance(request_or_url, AWSRequest):
        prepared = request_or_url.prepare()
        req = urllib.request.Request(prepared.url, data=prepared.body or None, method=prepared.method, headers=dict(prepared.headers))
    else:
        req = urllib.request.Request(berth.endpoint + request_or_url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def test_unsigned_and_mis_signed_requests_get_403(berth):
    status, headers, body = send(berth, "/memories/", method="POST", body=b"{}")
    assert status == 403 and headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    assert "x-amzn-requestid" in headers

    status, headers, _ = send(berth, signed(berth, "POST", "/memories/", b"{}", secret="wrong-secret-wrong-secret"))
    assert status == 403 and headers["x-amzn-errortype"] == "InvalidSignatureException"
    status, headers, _ = send(berth, signed(berth, "POST", "/memories/", b"{}", key="AKIAUNKNOWNUNKNOWN00"))
    assert status == 403 and headers["x-amzn-errortype"] == "UnrecognizedClientException"
    for garbage in ["AWS4-HMAC-SHA256", "Bearer abc", "AWS4-HMAC-SHA256 Credential=x, SignedHeaders=host, Signature=00",
                    "AWS4-HMAC-SHA256 Credential=a/b/c/d/e/f/g,,,", "\u00ff" * 10]:
        status, headers, _ = send(berth, "/memories/", method="POST", body=b"{}",
                                  headers={"Authorization": garbage.encode("latin-1").decode("latin-1"), "X-Amz-Date": "20261124T000000Z"})
        assert status == 403, garbage
    status, _, body = send(berth, signed(berth, "POST", "/memories/", b"{}"))
    assert status == 200, body


def test_wrong_region_is_refused(berth):
    client = boto3.client("bedrock-agentcore-control", region_name="eu-west-1")
    with pytest.raises(ClientError) as raised:
        client.list_memories()
    assert raised.value.response["Error"]["Code"] == "InvalidSignatureException"


# ---- bad input as raw HTTP --------------------------------------------------------------------

def test_bad_bodies_get_modelled_errors_and_the_server_keeps_serving(berth, cp):
    def post(path, body):
        return send(berth, signed(berth, "POST", path, body, headers={"Content-Type": "application/json"}))

    status, headers, body = post("/memories/create", b"{not json")
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"
    assert json.loads(body)["reason"] == "CannotParse"
    status, headers, body = post("/memories/create", b'{"name": 7, "eventExpiryDuration": "30"}')
    assert status == 400
    assert {f["name"] for f in json.loads(body)["fieldList"]} == {"name", "eventExpiryDuration"}
    status, headers, body = post("/memories/create", b"[]")
    assert status == 400 and json.loads(body)["reason"] == "CannotParse"
    # A body over the limit is refused from its Content-Length, before it is read; an unsigned
    # one is refused before anything else.
    import http.client

    def declare_huge_body(headers):
        connection = http.client.HTTPConnection("127.0.0.1", berth.port, timeout=10)
        connection.putrequest("POST", "/memories/create", skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            if name.lower() != "content-length":
                connection.putheader(name, value)
        connection.putheader("Content-Length", str(64 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        result = response.status, response.getheader("x-amzn-errortype")
        connection.close()
        return result

    prepared = signed(berth, "POST", "/memories/create", b"{}").prepare()
    assert declare_huge_body(dict(prepared.headers) | {"Host": f"127.0.0.1:{berth.port}"}) == (413, "ValidationException")
    assert declare_huge_body({"Host": f"127.0.0.1:{berth.port}"}) == (403, "MissingAuthenticationTokenException")
    status, headers, body = post("/memories/..%2F..%2Fetc/events", b"{}")
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"
    status, headers, _ = post("/memories/m_%01%02-AbCdEfGhIj/actors", b"{}")
    assert status == 400
    status, headers, _ = send(berth, signed(berth, "GET", "/no/such/path"))
    assert status == 404 and headers["x-amzn-errortype"] == "UnknownOperationException"
    assert cp.list_memories()["ResponseMetadata"]["HTTPStatusCode"] == 200
