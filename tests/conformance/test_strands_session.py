"""Spec §7 flow 14: the Strands AgentCoreMemorySessionManager saves a session and a new process
(here: a new manager and agent) restores it. The agent's model is a local stand-in because the
flow exercises Berth's memory, not a language model."""

import pytest

from conftest import unique

strands = pytest.importorskip("strands")
from strands import Agent  # noqa: E402
from strands.models.model import Model  # noqa: E402


class CannedModel(Model):
    """Answers every turn with a fixed sentence, as a streaming model would."""

    def __init__(self, reply):
        self.reply = reply

    def update_config(self, **config):
        pass

    def get_config(self):
        return {}

    async def structured_output(self, output_model, prompt, system_prompt=None, **kwargs):
        raise NotImplementedError
        yield  # pragma: no cover

    async def stream(self, messages, tool_specs=None, system_prompt=None, **kwargs):
        yield {"messageStart": {"role": "assistant"}}
        yield {"contentBlockStart": {"start": {}}}
        yield {"contentBlockDelta": {"delta": {"text": self.reply}}}
        yield {"contentBlockStop": {}}
        yield {"messageStop": {"stopReason": "end_turn"}}


def test_flow_14_strands_session_round_trip(cp, berth):
    from bedrock_agentcore.memory.integrations.strands.config import AgentCoreMemoryConfig
    from bedrock_agentcore.memory.integrations.strands.session_manager import AgentCoreMemorySessionManager

    memory_id = cp.create_memory(name=unique(), eventExpiryDuration=30)["memory"]["id"]
    cp.get_waiter("memory_created").wait(memoryId=memory_id, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    config = AgentCoreMemoryConfig(memory_id=memory_id, session_id="trip-1", actor_id="traveller")

    first = AgentCoreMemorySessionManager(config, region_name="us-east-1")
    agent = Agent(model=CannedModel("Lisbon is lovely in May."), session_manager=first, agent_id="planner", callback_handler=None)
    agent("Where should I go in May?")
    agent("And what should I pack?")
    assert len(agent.messages) == 4

    restored = AgentCoreMemorySessionManager(config, region_name="us-east-1")
    again = Agent(model=CannedModel("unused"), session_manager=restored, agent_id="planner", callback_handler=None)
    texts = [block["text"] for message in again.messages for block in message["content"] if "text" in block]
    assert texts == ["Where should I go in May?", "Lisbon is lovely in May.", "And what should I pack?", "Lisbon is lovely in May."]
    assert [m["role"] for m in again.messages] == ["user", "assistant", "user", "assistant"]
