"""A conformance A2A agent served with the SDK's serve_a2a on port 9000: it answers every
message with the text it was sent, reversed."""

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.utils import new_agent_text_message
from bedrock_agentcore.runtime import serve_a2a


class ReverseExecutor(AgentExecutor):
    """Reverses the user's text."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        await event_queue.enqueue_event(new_agent_text_message(text[::-1]))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise RuntimeError("nothing to cancel")


if __name__ == "__main__":
    serve_a2a(ReverseExecutor())
