"""An OpenAI-compatible chat server for the extraction tests: a real HTTP peer that answers
Berth's extraction and consolidation requests from what they contain, with no model behind it.

It reads the schema name Berth asks for (`response_format.json_schema.name`) and the
conversation in the user message, and answers what a careful model would: each user sentence
as a fact, sentences with "love"/"like"/"prefer" as preferences, the user's lines as a summary,
ADD for every consolidation. Requests are recorded, and `fail_with` makes it answer errors, so
tests can check the provider client and the failure paths."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def user_lines(text):
    return [line[len("user: "):].strip() for line in text.splitlines() if line.startswith("user: ")]


def sentences(lines):
    out = []
    for line in lines:
        for part in line.replace("!", ".").split("."):
            part = part.strip()
            if part:
                out.append(part + ".")
    return out


def answer(request):
    schema_name = request["response_format"]["json_schema"]["name"]
    prompt = request["messages"][-1]["content"]
    said = sentences(user_lines(prompt))
    if schema_name == "memories":
        return {"memories": [f"The user said: {s}" for s in said]}
    if schema_name == "preferences":
        liked = [s for s in said if any(w in s.lower() for w in ("love", "like", "prefer"))]
        return {"preferences": [{"preference": s, "context": "said in conversation", "categories": ["general"]} for s in liked]}
    if schema_name == "summary":
        return {"summary": "The user talked about: " + " ".join(said)}
    if schema_name == "episode":
        return {"situation": "a chat", "intent": said[0] if said else "", "actions": "answered", "outcome": "done"}
    if schema_name == "lessons":
        return {"lessons": []}
    if schema_name == "decision":
        return {"action": "ADD", "existing": 0, "memory": ""}
    raise ValueError(f"unexpected schema {schema_name}")


class ModelServer:
    def __init__(self):
        self.requests = []
        self.fail_with = None  # an HTTP status to answer instead, while set
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                if server.fail_with:
                    self.reply(server.fail_with, {"error": {"message": "the model is unavailable"}})
                elif self.path == "/v1/chat/completions":
                    content = json.dumps(answer(body))
                    self.reply(200, {"choices": [{"message": {"role": "assistant", "content": content}}],
                                     "usage": {"prompt_tokens": 100, "completion_tokens": 20}})
                else:
                    self.reply(404, {"error": {"message": "no such path"}})

            def reply(self, status, value):
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def chat_requests(self):
        return [r for r in self.requests if r["path"] == "/v1/chat/completions"]

    def close(self):
        self.http.shutdown()
