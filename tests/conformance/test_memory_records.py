"""Long-term memory records written directly (BatchCreateMemoryRecords, as self-managed
strategies do) and read back with boto3 and the SDK: get, list by namespace, hybrid retrieval,
delete. With the embedded model (`make models`), retrieval also finds records by meaning."""

import pytest
from botocore.exceptions import ClientError
from bedrock_agentcore.memory import MemoryClient
from bedrock_agentcore.memory.session import MemorySessionManager

from conftest import MODELS
from test_memory_short_term import create_active_memory

FACTS = [
    ("/users/ana/", "Ana is allergic to peanuts and carries an epinephrine pen."),
    ("/users/ana/", "Ana loves spicy Thai green curry and eats it every Friday."),
    ("/users/ana/trips/", "Ana flew to Lisbon in May and stayed near the Alfama district."),
    ("/users/bo/", "Bo prefers tea without sugar in the mornings."),
]


def write_facts(dp, memory_id):
    records = [
        {"requestIdentifier": f"r{i}", "namespaces": [ns], "content": {"text": text}, "timestamp": 1_800_000_000 + i}
        for i, (ns, text) in enumerate(FACTS)
    ]
    records.append({"requestIdentifier": "bad", "namespaces": ["/x/"], "content": {"text": "x"},
                    "timestamp": 1_800_000_000, "memoryStrategyId": "missing-AbCdEfGhIj"})
    out = dp.batch_create_memory_records(memoryId=memory_id, records=records)
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert [r["requestIdentifier"] for r in out["successfulRecords"]] == ["r0", "r1", "r2", "r3"]
    assert [(r["requestIdentifier"], r["status"]) for r in out["failedRecords"]] == [("bad", "FAILED")]
    return {r["requestIdentifier"]: r["memoryRecordId"] for r in out["successfulRecords"]}


def test_records_written_directly_are_read_listed_retrieved_and_deleted(cp, dp):
    memory_id = create_active_memory(cp)
    ids = write_facts(dp, memory_id)

    record = dp.get_memory_record(memoryId=memory_id, memoryRecordId=ids["r3"])["memoryRecord"]
    assert record["content"]["text"] == FACTS[3][1]
    assert record["namespaces"] == ["/users/bo/"]

    listed = dp.list_memory_records(memoryId=memory_id, namespacePath="/users/ana")["memoryRecordSummaries"]
    assert sorted(r["memoryRecordId"] for r in listed) == sorted([ids["r0"], ids["r1"], ids["r2"]])

    hits = dp.retrieve_memory_records(
        memoryId=memory_id, namespace="/users/ana/", searchCriteria={"searchQuery": "peanuts", "topK": 2}
    )["memoryRecordSummaries"]
    assert hits[0]["memoryRecordId"] == ids["r0"]
    assert 0 < hits[0]["score"] <= 1

    updated = dp.batch_update_memory_records(memoryId=memory_id, records=[
        {"memoryRecordId": ids["r3"], "timestamp": 1_900_000_000, "content": {"text": "Bo now drinks black coffee."}},
    ])
    assert [r["memoryRecordId"] for r in updated["successfulRecords"]] == [ids["r3"]]
    assert dp.get_memory_record(memoryId=memory_id, memoryRecordId=ids["r3"])["memoryRecord"]["content"]["text"] == (
        "Bo now drinks black coffee."
    )

    # The SDK's clients on top.
    client = MemoryClient(region_name="us-east-1")
    found = client.retrieve_memories(memory_id=memory_id, namespace="/users/bo/", query="black coffee", top_k=3)
    assert [m["content"]["text"] for m in found] == ["Bo now drinks black coffee."]
    manager = MemorySessionManager(memory_id=memory_id, region_name="us-east-1")
    searched = manager.search_long_term_memories(query="Lisbon Alfama", namespace_path="/users/ana", top_k=3)
    assert searched[0]["content"]["text"] == FACTS[2][1]
    deleted = manager.delete_all_long_term_memories_in_namespace("/users/ana/trips/")
    assert len(deleted["successfulRecords"]) == 1
    with pytest.raises(ClientError) as gone:
        dp.get_memory_record(memoryId=memory_id, memoryRecordId=ids["r2"])
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"

    dp.delete_memory_record(memoryId=memory_id, memoryRecordId=ids["r3"])
    with pytest.raises(ClientError) as missing:
        dp.delete_memory_record(memoryId=memory_id, memoryRecordId=ids["r3"])
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as unscoped:
        dp.retrieve_memory_records(memoryId=memory_id, searchCriteria={"searchQuery": "tea"})
    assert unscoped.value.response["Error"]["Code"] == "ValidationException"


def test_metadata_filters_on_indexed_keys(cp, dp):
    memory_id = create_active_memory(cp, indexedKeys=[{"key": "priority", "type": "NUMBER"}])
    records = [
        {"requestIdentifier": f"r{i}", "namespaces": ["/notes/"], "content": {"text": f"garden note {i}"},
         "timestamp": 1_800_000_000 + i, "metadata": {"priority": {"numberValue": i}}}
        for i in range(6)
    ]
    dp.batch_create_memory_records(memoryId=memory_id, records=records)
    high = [{"left": {"metadataKey": "priority"}, "operator": "GREATER_THAN_OR_EQUALS",
             "right": {"metadataValue": {"numberValue": 4}}}]
    listed = dp.list_memory_records(memoryId=memory_id, namespace="/notes/", metadataFilters=high)
    assert sorted(r["content"]["text"] for r in listed["memoryRecordSummaries"]) == ["garden note 4", "garden note 5"]
    found = dp.retrieve_memory_records(memoryId=memory_id, namespace="/notes/",
                                       searchCriteria={"searchQuery": "garden", "topK": 5, "metadataFilters": high})
    assert {r["metadata"]["priority"]["numberValue"] for r in found["memoryRecordSummaries"]} == {4, 5}
    with pytest.raises(ClientError) as refused:
        dp.list_memory_records(memoryId=memory_id, namespace="/notes/",
                               metadataFilters=[{"left": {"metadataKey": "colour"}, "operator": "EXISTS"}])
    assert refused.value.response["Error"]["Code"] == "ValidationException"


@pytest.mark.skipif(not MODELS, reason="the embedded model is not unpacked (make models)")
def test_retrieval_finds_records_by_meaning_with_the_embedded_model(cp, dp):
    memory_id = create_active_memory(cp)
    ids = write_facts(dp, memory_id)
    hits = dp.retrieve_memory_records(
        memoryId=memory_id, namespacePath="/users/ana",
        searchCriteria={"searchQuery": "What food does she enjoy?", "topK": 3},
    )["memoryRecordSummaries"]
    assert hits[0]["memoryRecordId"] == ids["r1"], [h["content"]["text"] for h in hits]
