#!/usr/bin/env python3
"""A fake OpenAI Responses API on loopback, for driving the real Codex CLI in tests.

Nothing leaves the machine: Codex is pointed here by a custom model provider
(`model_providers.fake.base_url = "http://127.0.0.1:PORT/v1"`, `wire_api = "responses"`), and
POSTs to /v1/responses. Every request body is appended to the log file (one JSON line each).

The reply is chosen from the latest user message and the tool outputs since:
- contains TOOL-ME   exec_command `touch made-by-tool.txt`; after its output, "Ran it: <output>".
- contains ASK-ME    request_user_input with two questions (color: Red/Blue, size: no options);
                     after the answer, "You said: <the tool output>".
- contains PLAN-ME   a reply with <proposed_plan>1. touch plan.txt</proposed_plan> (plan mode).
- "Implement the plan."  apply_patch adding plan.txt; after its output, "Implemented the plan."
- contains PATCH-ME  apply_patch adding patched.txt ("hi"); after its output, "Patched."
- contains SLOW-ME   exec_command `sleep 30` (for cancel); then "Slept."
- anything else      "Hello from the fake API." (streamed in two deltas)

Usage: fake_openai.py PORT_FILE LOG_FILE   (binds 127.0.0.1:0, writes the port to PORT_FILE)
"""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG_LOCK = threading.Lock()
COUNTER = [0]


def user_texts(item):
    out = []
    for c in item.get("content") or []:
        if c.get("type") in ("input_text", "output_text", "text"):
            out.append(c.get("text", ""))
    return "\n".join(out)


def latest(body):
    """The latest user message and the tool outputs after it."""
    prompt, outputs = "", []
    for item in body.get("input") or []:
        if item.get("type") == "message" and item.get("role") == "user":
            prompt, outputs = user_texts(item), []
        elif item.get("type") in ("function_call_output", "custom_tool_call_output"):
            out = item.get("output")
            outputs.append(out if isinstance(out, str) else json.dumps(out))
    return prompt, outputs


def message(text, parts=1):
    COUNTER[0] += 1
    mid = f"m{COUNTER[0]}"
    events = [{"type": "response.output_item.added",
               "item": {"type": "message", "role": "assistant", "id": mid, "content": []}}]
    size = max(1, -(-len(text) // parts))
    for i in range(0, len(text), size):
        events.append({"type": "response.output_text.delta", "item_id": mid, "output_index": 0,
                       "content_index": 0, "delta": text[i:i + size]})
    events.append({"type": "response.output_item.done",
                   "item": {"type": "message", "role": "assistant", "id": mid,
                            "content": [{"type": "output_text", "text": text}]}})
    return events


def call(name, arguments):
    COUNTER[0] += 1
    return [{"type": "response.output_item.done",
             "item": {"type": "function_call", "call_id": f"call_{COUNTER[0]}", "name": name,
                      "arguments": json.dumps(arguments)}}]


def patch(name):
    COUNTER[0] += 1
    return [{"type": "response.output_item.done",
             "item": {"type": "custom_tool_call", "call_id": f"call_{COUNTER[0]}", "name": "apply_patch",
                      "input": f"*** Begin Patch\n*** Add File: {name}\n+hi\n*** End Patch\n"}}]


def reply(body):
    prompt, outputs = latest(body)
    if "TOOL-ME" in prompt:
        if not outputs:
            return call("exec_command", {"cmd": "touch made-by-tool.txt"})
        return message("Ran it: " + outputs[-1][:200])
    if "SLOW-ME" in prompt:
        if not outputs:
            return call("exec_command", {"cmd": "sleep 30"})
        return message("Slept.")
    if "ASK-ME" in prompt:
        if not outputs:
            return call("request_user_input", {"questions": [
                {"id": "color", "header": "Color", "question": "Which color?",
                 "options": [{"label": "Red", "description": "warm"}, {"label": "Blue", "description": "cool"}]},
                {"id": "size", "header": "Size", "question": "Which size?",
                 "options": [{"label": "Small", "description": "s"}, {"label": "Large", "description": "l"}]}]})
        return message("You said: " + outputs[-1])
    if "PLAN-ME" in prompt:
        return message("Here is my plan.\n<proposed_plan>\n1. touch plan.txt\n</proposed_plan>\n")
    if "Implement the plan." in prompt:
        return patch("plan.txt") if not outputs else message("Implemented the plan.")
    if "PATCH-ME" in prompt:
        return patch("patched.txt") if not outputs else message("Patched.")
    return message("Hello from the fake API.", parts=2)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        with LOG_LOCK, open(self.server.log_path, "a") as log:
            log.write(json.dumps({"path": self.path, "auth": self.headers.get("authorization"), "body": body}) + "\n")
        if not self.path.endswith("/responses"):
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        COUNTER[0] += 1
        rid = f"r{COUNTER[0]}"
        events = [{"type": "response.created", "response": {"id": rid}}] + reply(body) + [
            {"type": "response.completed", "response": {"id": rid, "usage": {
                "input_tokens": 1, "input_tokens_details": None, "output_tokens": 1,
                "output_tokens_details": None, "total_tokens": 2}}}]
        data = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    port_file, log_file = sys.argv[1], sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.log_path = log_file
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
