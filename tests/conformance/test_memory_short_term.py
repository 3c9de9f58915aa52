"""Spec §7 flow 3 (short-term memory) with raw boto3, and the SDK's MemoryClient and
MemorySessionManager on top of it."""

import re
import time
from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError

from conftest import unique

EVENT_ID = re.compile(r"^[0-9]{19}#[a-f0-9]+$")


def create_active_memory(cp, **extra):
    created = cp.create_memory(name=unique(), eventExpiryDuration=30, **extra)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert created["memory"]["status"] == "CREATING"
    memory_id = created["memory"]["id"]
    cp.get_waiter("memory_created").wait(memoryId=memory_id, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return memory_id


def conversational(text, role):
    return {"conversational": {"content": {"text": text}, "role": role}}


def test_flow_3_short_term_memory(cp, dp):
    memory_id = create_active_memory(cp)
    memory = cp.get_memory(memoryId=memory_id)["memory"]
    assert memory["status"] == "ACTIVE"
    assert memory["arn"].endswith(f":memory/{memory_id}")
    assert memory["eventExpiryDuration"] == 30
    assert isinstance(memory["createdAt"], datetime)

    start = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=timezone.utc).timestamp()
    created = []
    payloads = [
        [conversational("What is the capital of France?", "USER")],
        [conversational("Paris.", "ASSISTANT")],
        [{"blob": {"state": {"step": 3}, "tags": ["a", "b"]}}],
    ]
    for i, payload in enumerate(payloads):
        response = dp.create_event(
            memoryId=memory_id, actorId="user-1", sessionId="session-1",
            eventTimestamp=datetime.fromtimestamp(start + i, tz=timezone.utc),
            payload=payload, metadata={"kind": {"stringValue": "turn" if i < 2 else "state"}},
        )
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 201
        event = response["event"]
        assert EVENT_ID.match(event["eventId"]), event["eventId"]
        assert event["eventTimestamp"].timestamp() == pytest.approx(start + i, abs=0.001)
        created.append(event)

    listed = dp.list_events(memoryId=memory_id, actorId="user-1", sessionId="session-1", includePayloads=True)["events"]
    assert [e["eventId"] for e in listed] == [e["eventId"] for e in reversed(created)], "newest first"
    assert listed[0]["payload"] == payloads[2]
    assert listed[2]["payload"] == payloads[0]
    assert listed[0]["metadata"] == {"kind": {"stringValue": "state"}}

    without = dp.list_events(memoryId=memory_id, actorId="user-1", sessionId="session-1", includePayloads=False)["events"]
    assert all(e["payload"] == [] for e in without)

    # Pagination through the body's nextToken.
    page = dp.list_events(memoryId=memory_id, actorId="user-1", sessionId="session-1", maxResults=2)
    assert len(page["events"]) == 2 and "nextToken" in page
    rest = dp.list_events(memoryId=memory_id, actorId="user-1", sessionId="session-1", maxResults=2, nextToken=page["nextToken"])
    assert [e["eventId"] for e in rest["events"]] == [created[0]["eventId"]]
    assert "nextToken" not in rest
    paginated = [
        e["eventId"]
        for p in dp.get_paginator("list_events").paginate(
            memoryId=memory_id, actorId="user-1", sessionId="session-1", PaginationConfig={"PageSize": 1})
        for e in p["events"]
    ]
    assert paginated == [e["eventId"] for e in reversed(created)]

    # Metadata filters.
    states = dp.list_events(
        memoryId=memory_id, actorId="user-1", sessionId="session-1",
        filter={"eventMetadata": [{"left": {"metadataKey": "kind"}, "operator": "EQUALS_TO",
                                   "right": {"metadataValue": {"stringValue": "state"}}}]},
    )["events"]
    assert [e["eventId"] for e in states] == [created[2]["eventId"]]
    none = dp.list_events(
        memoryId=memory_id, actorId="user-1", sessionId="session-1",
        filter={"eventMetadata": [{"left": {"metadataKey": "kind"}, "operator": "NOT_EXISTS"}]},
    )["events"]
    assert none == []

    got = dp.get_event(memoryId=memory_id, actorId="user-1", sessionId="session-1", eventId=created[1]["eventId"])["event"]
    assert got["payload"] == payloads[1]
    assert dp.delete_event(memoryId=memory_id, actorId="user-1", sessionId="session-1", eventId=created[1]["eventId"])["eventId"] == created[1]["eventId"]
    with pytest.raises(dp.exceptions.ResourceNotFoundException):
        dp.get_event(memoryId=memory_id, actorId="user-1", sessionId="session-1", eventId=created[1]["eventId"])
    with pytest.raises(dp.exceptions.ResourceNotFoundException):
        dp.get_event(memoryId=memory_id, actorId="user-2", sessionId="session-1", eventId=created[0]["eventId"])

    dp.create_event(memoryId=memory_id, actorId="user-1", sessionId="session-2",
                    eventTimestamp=datetime.now(timezone.utc), payload=[conversational("hi", "USER")])
    dp.create_event(memoryId=memory_id, actorId="user-2", sessionId="session-9",
                    eventTimestamp=datetime.now(timezone.utc), payload=[conversational("hey", "USER")])
    sessions = dp.list_sessions(memoryId=memory_id, actorId="user-1")["sessionSummaries"]
    assert sorted(s["sessionId"] for s in sessions) == ["session-1", "session-2"]
    assert all(s["actorId"] == "user-1" and isinstance(s["createdAt"], datetime) for s in sessions)
    actors = dp.list_actors(memoryId=memory_id)["actorSummaries"]
    assert [a["actorId"] for a in actors] == ["user-1", "user-2"]
    first = dp.list_actors(memoryId=memory_id, maxResults=1)
    assert [a["actorId"] for a in first["actorSummaries"]] == ["user-1"]
    second = dp.list_actors(memoryId=memory_id, maxResults=1, nextToken=first["nextToken"])
    assert [a["actorId"] for a in second["actorSummaries"]] == ["user-2"]

    # The memory can be addressed by ARN on the data plane.
    by_arn = dp.list_events(memoryId=memory["arn"], actorId="user-1", sessionId="session-2")["events"]
    assert len(by_arn) == 1


def test_memory_error_names_and_validation(cp, unchecked_cp, unchecked_dp):
    dp = unchecked_dp
    with pytest.raises(ClientError) as raised:
        cp.get_memory(memoryId="nope_nope-AbCdEfGhIj")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    with pytest.raises(cp.exceptions.ValidationException) as raised:
        unchecked_cp.create_memory(name="9-not-a-valid-name", eventExpiryDuration=1)
    error = raised.value.response
    assert error["reason"] == "FieldValidationFailed"
    assert {f["name"] for f in error["fieldList"]} == {"name", "eventExpiryDuration"}

    memory_id = create_active_memory(cp)
    with pytest.raises(dp.exceptions.ValidationException) as raised:
        dp.create_event(memoryId=memory_id, actorId="../etc", sessionId="s", eventTimestamp=datetime.now(timezone.utc),
                        payload=[conversational("x", "USER")])
    assert any(f["name"] == "actorId" for f in raised.value.response["fieldList"])
    with pytest.raises(dp.exceptions.ValidationException) as raised:
        dp.create_event(memoryId=memory_id, actorId="a", sessionId="s", eventTimestamp=datetime.now(timezone.utc),
                        payload=[{"conversational": {"content": {"text": "x"}, "role": "ROBOT"}}])
    assert raised.value.response["fieldList"][0]["name"] == "payload[0].conversational.role"
    with pytest.raises(dp.exceptions.ValidationException):
        dp.list_events(memoryId=memory_id, actorId="a", sessionId="s", nextToken="forged-token")
    with pytest.raises(dp.exceptions.ValidationException):
        dp.create_event(memoryId=memory_id, actorId="a", sessionId="s", eventTimestamp=datetime.now(timezone.utc),
                        payload=[conversational("x", "USER")], branch={"name": "b1"})


def test_branches_and_parent_branches(cp, dp):
    memory_id = create_active_memory(cp)
    now = time.time()
    ids = []
    for i, text in enumerate(["one", "two", "three"]):
        ids.append(dp.create_event(memoryId=memory_id, actorId="a", sessionId="s",
                                   eventTimestamp=datetime.fromtimestamp(now + i, tz=timezone.utc),
                                   payload=[conversational(text, "USER")])["event"]["eventId"])
    fork = dp.create_event(memoryId=memory_id, actorId="a", sessionId="s",
                           eventTimestamp=datetime.fromtimestamp(now + 10, tz=timezone.utc),
                           payload=[conversational("two-b", "USER")], branch={"name": "alt", "rootEventId": ids[1]})["event"]
    assert fork["branch"] == {"name": "alt", "rootEventId": ids[1]}
    cont = dp.create_event(memoryId=memory_id, actorId="a", sessionId="s",
                           eventTimestamp=datetime.fromtimestamp(now + 11, tz=timezone.utc),
                           payload=[conversational("three-b", "USER")], branch={"name": "alt"})["event"]
    assert cont["branch"]["rootEventId"] == ids[1]

    alt_only = dp.list_events(memoryId=memory_id, actorId="a", sessionId="s", filter={"branch": {"name": "alt"}})["events"]
    assert [e["eventId"] for e in alt_only] == [cont["eventId"], fork["eventId"]]
    with_parents = dp.list_events(memoryId=memory_id, actorId="a", sessionId="s",
                                  filter={"branch": {"name": "alt", "includeParentBranches": True}})["events"]
    assert [e["eventId"] for e in with_parents] == [cont["eventId"], fork["eventId"], ids[1], ids[0]]
    main = dp.list_events(memoryId=memory_id, actorId="a", sessionId="s", filter={"branch": {"name": "main"}})["events"]
    assert [e["eventId"] for e in main] == list(reversed(ids))
    everything = dp.list_events(memoryId=memory_id, actorId="a", sessionId="s")["events"]
    assert len(everything) == 5


def test_memory_client_and_session_manager(berth):
    from bedrock_agentcore.memory import MemoryClient, MemorySessionManager
    from bedrock_agentcore.memory.constants import ConversationalMessage, MessageRole

    client = MemoryClient(region_name="us-east-1")
    memory = client.create_memory_and_wait(name=unique(), strategies=[], event_expiry_days=7, poll_interval=1)
    memory_id = memory["id"]
    assert memory["status"] == "ACTIVE"

    first = client.create_event(memory_id, "alice", "chat-1", [("Hello", "USER"), ("Hi Alice!", "ASSISTANT")])
    client.create_event(memory_id, "alice", "chat-1", [("Book a table", "USER"), ("Done.", "ASSISTANT")])
    events = client.list_events(memory_id, "alice", "chat-1")
    assert len(events) == 2
    turns = client.get_last_k_turns(memory_id, "alice", "chat-1", k=2)
    assert len(turns) == 2
    assert {m["content"]["text"] for turn in turns for m in turn} == {"Hello", "Hi Alice!", "Book a table", "Done."}

    client.fork_conversation(memory_id, "alice", "chat-1", first["eventId"], "retry", [("Hello again", "USER")])
    branches = {b["name"] for b in client.list_branches(memory_id, "alice", "chat-1")}
    assert branches == {"main", "retry"}

    manager = MemorySessionManager(memory_id=memory_id, region_name="us-east-1")
    manager.add_turns("bob", "chat-2", [ConversationalMessage("Remember my dog Rex", MessageRole.USER),
                                        ConversationalMessage("Noted!", MessageRole.ASSISTANT)])
    manager.add_turns("bob", "chat-2", [ConversationalMessage("What is my dog's name?", MessageRole.USER)])
    assert len(manager.list_events("bob", "chat-2")) == 2
    last = manager.get_last_k_turns("bob", "chat-2", k=1)
    assert len(last) == 1

    client.delete_memory_and_wait(memory_id, poll_interval=1)
    with pytest.raises(ClientError) as raised:
        client.gmcp_client.get_memory(memoryId=memory_id)
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
