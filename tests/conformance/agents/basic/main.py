"""A conformance agent written with BedrockAgentCoreApp. The payload's "op" picks a behaviour,
so one build serves every runtime test."""

import os
import time

from bedrock_agentcore.runtime import BedrockAgentCoreApp

app = BedrockAgentCoreApp()
counts = {}


def stream(words, fail):
    for word in words:
        time.sleep(0.3)
        yield {"delta": word}
    if fail:
        raise RuntimeError("the stream broke")


@app.entrypoint
def handle(payload, context):
    op = payload.get("op", "count")
    if op == "count":
        counts[context.session_id] = counts.get(context.session_id, 0) + 1
        return {"count": counts[context.session_id], "session": context.session_id, "pid": os.getpid()}
    if op == "stream":
        return stream(payload.get("words", []), payload.get("fail", False))
    if op == "raise":
        raise ValueError("the agent failed on purpose")
    if op == "memory":
        from bedrock_agentcore.memory import MemoryClient

        client = MemoryClient()
        client.create_event(
            memory_id=payload["memoryId"],
            actor_id="agent",
            session_id=context.session_id,
            messages=[("written from inside the sandbox", "ASSISTANT")],
        )
        events = client.list_events(memory_id=payload["memoryId"], actor_id="agent", session_id=context.session_id)
        try:
            client.gmcp_client.list_memories()
            control = "allowed"
        except Exception as error:  # the session's key is data-plane only
            control = type(error).__name__ + ": " + str(error)[:200]
        return {"events": len(events), "control": control}
    if op == "env":
        return {"value": os.environ.get(payload["name"])}
    if op == "headers":
        # The caller's headers the platform forwarded (requestHeaderAllowlist, spec §3.3).
        return {"headers": {k.lower(): v for k, v in (context.request_headers or {}).items()}}
    if op == "size":
        return {"size": len(payload.get("data", ""))}
    if op == "peek":
        # What an agent can see of the machine it runs on.
        return {
            "uid": os.getuid(),
            "workspace": sorted(os.listdir("/workspace")),
            "home": os.environ.get("HOME"),
            "endpoint": os.environ.get("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE"),
        }
    return {"error": f"unknown op {op}"}


@app.websocket
async def echo(websocket, context):
    """Echoes text and binary frames; the first text reply names the session."""
    await websocket.accept()
    await websocket.send_text(f"session {context.session_id}")
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text("echo: " + message["text"])
        elif message.get("bytes") is not None:
            await websocket.send_bytes(message["bytes"][::-1])


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
