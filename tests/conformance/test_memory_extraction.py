"""Spec §7 flow 4: long-term memory extraction and retrieval through the SDK's MemoryClient.

Twice: once against an OpenAI-compatible model server the test starts (model_server.py, a real
HTTP peer that answers the extraction requests), and once with the embedded models alone
(SmolLM2 and all-MiniLM, no network), when $BERTH_TEST_MODELS_DIR provides them."""

import time

import boto3
import pytest
from bedrock_agentcore.memory import MemoryClient, MemorySessionManager

from conftest import BACKENDS, MODELS, Server, serving, unique
from model_server import ModelServer

FAST = """
[memory]
extraction_delay_ms = 300
extraction_retry_seconds = 1
extraction_max_attempts = 2
"""


@pytest.fixture(scope="module")
def model_server():
    server = ModelServer()
    yield server
    server.close()


@pytest.fixture(scope="module", params=BACKENDS)
def provider_berth(request, model_server):
    config = FAST + f"""
[models]
chat = "local"

[models.providers.local]
kind = "openai"
base_url = "{model_server.url}"
model = "extractor-1"
api_key = "test-key-123"
timeout_seconds = 10
max_retries = 0
"""
    yield from serving(Server(request.param, config=config))


@pytest.fixture(scope="module")
def embedded_berth():
    if not MODELS:
        pytest.skip("needs the embedded models ($BERTH_TEST_MODELS_DIR)")
    yield from serving(Server("sqlite", config=FAST))


def strategy_ids(memory):
    return {s["name"]: s["strategyId"] for s in memory["strategies"]}


def flow_four(region="us-east-1"):
    client = MemoryClient(region_name=region)
    memory = client.create_memory_and_wait(
        name=unique("flow4"),
        strategies=[
            {"semanticMemoryStrategy": {"name": "facts"}},
            {"userPreferenceMemoryStrategy": {"name": "prefs"}},
            {"summaryMemoryStrategy": {"name": "summ"}},
        ],
        event_expiry_days=30,
        poll_interval=1,
    )
    ids = strategy_ids(memory)
    assert set(ids) == {"facts", "prefs", "summ"}
    assert all(s["status"] == "ACTIVE" for s in client.get_memory_strategies(memory["id"]))
    client.create_event(
        memory_id=memory["id"], actor_id="user-1", session_id="s-1",
        messages=[
            ("I live in Lisbon and I work as a nurse.", "USER"),
            ("That sounds rewarding!", "ASSISTANT"),
            ("I love green curry, it is my favourite food.", "USER"),
        ],
    )
    facts = f"/strategies/{ids['facts']}/actors/user-1/"
    assert client.wait_for_memories(memory["id"], namespace=facts, test_query="curry", max_wait=120, poll_interval=1)
    return client, memory, ids, facts


def test_flow_four_with_a_model_server(provider_berth, model_server):
    # The first test on each server: its /metrics count the requests from here on.
    requests_before = len(model_server.chat_requests())
    client, memory, ids, facts = flow_four()
    dp = boto3.client("bedrock-agentcore")
    found = dp.retrieve_memory_records(
        memoryId=memory["id"], namespace=facts, searchCriteria={"searchQuery": "Where does the user live?", "topK": 5}
    )["memoryRecordSummaries"]
    texts = [r["content"]["text"] for r in found]
    assert "The user said: I live in Lisbon and I work as a nurse." in texts
    scores = [r["score"] for r in found]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert all(r["memoryStrategyId"] == ids["facts"] and r["namespaces"] == [facts] for r in found)
    assert texts[0] == "The user said: I live in Lisbon and I work as a nurse."

    # Preferences are JSON text, in their actor namespace; the summary is in the session's.
    prefs = f"/strategies/{ids['prefs']}/actors/user-1/"
    assert client.wait_for_memories(memory["id"], namespace=prefs, test_query="curry", max_wait=30, poll_interval=1)
    summary_ns = f"/strategies/{ids['summ']}/actors/user-1/sessions/s-1/"
    listed = dp.list_memory_records(memoryId=memory["id"], namespace=summary_ns)["memoryRecordSummaries"]
    assert len(listed) == 1 and listed[0]["content"]["text"].startswith("The user talked about:")

    # namespacePath covers every strategy's records of the actor, and only those.
    everything = dp.list_memory_records(memoryId=memory["id"], namespacePath="/strategies/")["memoryRecordSummaries"]
    assert {r["memoryStrategyId"] for r in everything} == set(ids.values())

    # The provider client asked for the schema, with the configured model and key.
    request = model_server.chat_requests()[requests_before]
    assert request["body"]["model"] == "extractor-1"
    assert request["headers"]["authorization"] == "Bearer test-key-123"
    assert request["body"]["response_format"]["type"] == "json_schema"

    # Token accounting: what the provider reported, per model, on /metrics.
    import urllib.request
    metrics = urllib.request.urlopen(f"{provider_berth.endpoint}/metrics").read().decode()
    calls = len(model_server.chat_requests()) - requests_before
    assert f'berth_model_input_tokens_total{{model="local:extractor-1"}} {100 * calls}' in metrics, metrics
    assert f'berth_model_calls_total{{model="local:extractor-1"}} {calls}' in metrics

    # A second session adds a fact; the summary of s-1 is unaffected.
    client.create_event(memory_id=memory["id"], actor_id="user-1", session_id="s-2",
                        messages=[("My sister is called Ana.", "USER")])
    deadline = time.time() + 30
    while time.time() < deadline:
        found = client.retrieve_memories(memory["id"], facts, "sister", top_k=5)
        if any("Ana" in r["content"]["text"] for r in found):
            break
        time.sleep(0.3)
    else:
        pytest.fail("the second session's fact was not extracted")

    # SKIP events are stored but never extracted.
    before = len(model_server.chat_requests())
    client.create_event(memory_id=memory["id"], actor_id="user-1", session_id="s-3",
                        messages=[("I own a red bicycle.", "USER")], extraction_mode="SKIP")
    time.sleep(1.5)
    assert len(model_server.chat_requests()) == before

    # Records are deleted through the SDK's session manager.
    manager = MemorySessionManager(memory_id=memory["id"], region_name="us-east-1")
    hits = manager.search_long_term_memories(query="nurse", namespace_prefix=facts, top_k=3)
    assert hits and "nurse" in hits[0]["content"]["text"]
    dp.delete_memory_record(memoryId=memory["id"], memoryRecordId=hits[0]["memoryRecordId"])
    manager.delete_all_long_term_memories_in_namespace(facts)
    assert dp.list_memory_records(memoryId=memory["id"], namespace=facts)["memoryRecordSummaries"] == []


def test_failed_extractions_are_jobs_that_can_be_redriven(provider_berth, model_server):
    client = MemoryClient(region_name="us-east-1")
    memory = client.create_memory_and_wait(name=unique("jobs"), strategies=[{"semanticMemoryStrategy": {"name": "facts"}}], poll_interval=1)
    facts = f"/strategies/{strategy_ids(memory)['facts']}/actors/user-9/"
    dp = boto3.client("bedrock-agentcore")
    model_server.fail_with = 500
    try:
        client.create_event(memory_id=memory["id"], actor_id="user-9", session_id="s-9",
                            messages=[("I collect vinyl records.", "USER")])
        deadline = time.time() + 30
        while time.time() < deadline:
            jobs = dp.list_memory_extraction_jobs(memoryId=memory["id"])["jobs"]
            # Two attempts (extraction_max_attempts), then the job waits to be re-driven.
            if jobs and "HTTP 500" in jobs[0]["failureReason"] and len([
                r for r in model_server.requests if "vinyl" in r["body"]["messages"][-1]["content"]
            ]) >= 2:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"no failed job: {dp.list_memory_extraction_jobs(memoryId=memory['id'])}")
    finally:
        model_server.fail_with = None
    job = jobs[0]
    assert job["status"] == "FAILED" and job["actorId"] == "user-9" and job["sessionId"] == "s-9"
    assert job["strategyId"] == strategy_ids(memory)["facts"]
    assert job["messages"]["messagesList"][0]["messageIndex"] == 0
    filtered = dp.list_memory_extraction_jobs(memoryId=memory["id"], filter={"actorId": "someone-else"})["jobs"]
    assert filtered == []
    assert dp.list_memory_records(memoryId=memory["id"], namespace=facts)["memoryRecordSummaries"] == []

    assert dp.start_memory_extraction_job(memoryId=memory["id"], extractionJob={"jobId": job["jobID"]})["jobId"] == job["jobID"]
    assert client.wait_for_memories(memory["id"], namespace=facts, test_query="vinyl", max_wait=30, poll_interval=1)
    assert dp.list_memory_extraction_jobs(memoryId=memory["id"])["jobs"] == []
    with pytest.raises(dp.exceptions.ResourceNotFoundException):
        dp.start_memory_extraction_job(memoryId=memory["id"], extractionJob={"jobId": job["jobID"]})


def test_ingest_data_feeds_extraction(provider_berth):
    client = MemoryClient(region_name="us-east-1")
    memory = client.create_memory_and_wait(name=unique("ingest"), strategies=[{"semanticMemoryStrategy": {"name": "facts"}}], poll_interval=1)
    dp = boto3.client("bedrock-agentcore", config=__import__("botocore").config.Config(parameter_validation=False))
    out = dp.ingest_data(
        memoryId=memory["id"], actorId="user-5", contentTimestamp=time.time(),
        source={"inline": {"payload": [{"conversational": {"role": "USER", "content": {"text": "I speak Portuguese."}}}]}},
    )
    assert out["sessionId"]
    facts = f"/strategies/{strategy_ids(memory)['facts']}/actors/user-5/"
    assert client.wait_for_memories(memory["id"], namespace=facts, test_query="Portuguese", max_wait=30, poll_interval=1)


def test_namespace_variables_are_validated(provider_berth):
    cp = boto3.client("bedrock-agentcore-control")
    dp = boto3.client("bedrock-agentcore")
    memory = cp.create_memory(
        name=unique("nskeys"), eventExpiryDuration=30,
        namespaceKeys=[{"key": "tenant", "validation": {"allowedValues": ["acme"]}}],
        memoryStrategies=[{"semanticMemoryStrategy": {"name": "facts", "namespaceTemplates": ["/t/{tenant}/{actorId}/"]}}],
    )["memory"]
    cp.get_waiter("memory_created").wait(memoryId=memory["id"], WaiterConfig={"Delay": 1})
    event = dict(memoryId=memory["id"], actorId="u", sessionId="s", eventTimestamp=time.time(),
                 payload=[{"conversational": {"role": "USER", "content": {"text": "I like chess."}}}])
    with pytest.raises(dp.exceptions.ValidationException, match="not an allowed value"):
        dp.create_event(**event, extractionConfig={"namespaceVariables": {"tenant": "globex"}})
    dp.create_event(**event, extractionConfig={"namespaceVariables": {"tenant": "acme"}})
    client = MemoryClient(region_name="us-east-1")
    assert client.wait_for_memories(memory["id"], namespace="/t/acme/u/", test_query="chess", max_wait=30, poll_interval=1)


def test_flow_four_with_the_embedded_models(embedded_berth):
    client, memory, ids, facts = flow_four()
    found = client.retrieve_memories(memory["id"], facts, "Where does the user live and work?", top_k=5)
    assert found and all(r["namespaces"] == [facts] for r in found)
    summary_ns = f"/strategies/{ids['summ']}/actors/user-1/sessions/s-1/"
    assert client.wait_for_memories(memory["id"], namespace=summary_ns, test_query="user", max_wait=120, poll_interval=1)
