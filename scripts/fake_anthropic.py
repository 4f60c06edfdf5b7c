#!/usr/bin/env python3
"""A fake Anthropic Messages API on loopback, for driving the real Claude Code CLI in tests.

Nothing leaves the machine: the CLI is pointed here with ANTHROPIC_BASE_URL. Every request is
appended to the log file (one JSON line each) so a test can see what the CLI asked.

The reply is chosen from the latest prompt of the conversation and the tool results since:
- contains PLAN-ME    plan mode: write the plan to the plan file the system prompt names, call
                      ExitPlanMode (with `{}`: the CLI adds the plan and its path); once
                      approved, write NOTES.md in the working directory; then "Done." When
                      denied, the denial is echoed back ("Revised after: …"). With
                      PLAN-ME-THEN-BASH, after NOTES.md it also runs the Bash command
                      `echo from-bash > bash-wrote.txt`, then "Done. The shell said: …".
- contains NOPLAN-ME  ExitPlanMode without writing a plan first; then echo the answer.
- contains ASK-ME     AskUserQuestion with two questions; then echo the answers.
- contains TOOL-ME    Bash `touch made-by-tool.txt` (a command that asks permission); then "Ran it."
- contains LONG-ME    a reply of about 300 KB.
- contains REMEMBER-ME WORD
                      "I remember: W1, W2, …": the words of every REMEMBER-ME prompt in the
                      conversation the CLI sent, in order (so a resumed conversation remembers
                      earlier turns, a new one only this prompt).
- anything else       "Hello from the fake API."
An API key of "bad-key" gets 401 authentication_error.

Usage: fake_anthropic.py PORT_FILE LOG_FILE   (binds 127.0.0.1:0, writes the port to PORT_FILE)
"""
import hashlib, json, re, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG_LOCK = threading.Lock()


def text_of(content):
    if isinstance(content, str):
        return content
    out = []
    for block in content or []:
        if block.get("type") == "text":
            out.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            c = block.get("content")
            out.append(text_of(c) if not isinstance(c, str) else c)
    return "\n".join(out)


def system_text(body):
    s = body.get("system", "")
    return s if isinstance(s, str) else "\n".join(b.get("text", "") for b in s)


def tool_results(messages):
    """Every tool result, in order: (tool name, result text, is_error, tool use id)."""
    names, results = {}, []
    for m in messages:
        if isinstance(m.get("content"), list):
            for b in m["content"]:
                if b.get("type") == "tool_use":
                    names[b["id"]] = b["name"]
                elif b.get("type") == "tool_result":
                    c = b.get("content")
                    text = c if isinstance(c, str) else text_of(c)
                    use = b.get("tool_use_id", "")
                    results.append((names.get(use, "?"), text, bool(b.get("is_error")), use))
    return results


def latest_prompt(messages):
    """The latest prompt naming a scenario, and the results of the tools used for it.

    The CLI merges what it sends (tool results, reminders and the next prompt can share one user
    message, earlier turns stay in the conversation with --resume), so results are matched to
    the prompt by the tag in their tool use id, not by position."""
    prompt = ""
    for m in messages:
        content = m.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for b in blocks:
            if m.get("role") == "user" and b.get("type") == "text" and re.search(r"(PLAN|NOPLAN|ASK|TOOL|LONG)-ME", b.get("text", "")):
                prompt = b["text"]
    mine = [r for r in tool_results(messages) if tag(prompt) in r[3]]
    return prompt, [r[:3] for r in mine]


def tag(prompt):
    return hashlib.sha1(prompt.encode()).hexdigest()[:10]


def decide(body):
    """Returns a list of content blocks for the reply. Tool use ids carry the prompt's tag and
    are unique within a conversation (the CLI drops a tool use whose id it has seen before)."""
    messages = body.get("messages", [])
    blocks = scenario(body)
    prompt, _ = latest_prompt(messages)
    for b in blocks:
        if b["type"] == "tool_use":
            b["id"] = f"{b['id']}_{tag(prompt)}_{len(messages)}"
    return blocks


def remembered(messages):
    words = []
    for m in messages:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for b in blocks:
            if b.get("type") == "text":
                words += re.findall(r"REMEMBER-ME (\w+)", b.get("text", ""))
    return words


def scenario(body):
    messages = body.get("messages", [])
    words = remembered(messages)
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    if words and "REMEMBER-ME" in text_of(last_user.get("content")):
        return [{"type": "text", "text": "I remember: " + ", ".join(words)}]
    prompt, done = latest_prompt(messages)
    tools = [n for n, _, _ in done]
    if "NOPLAN-ME" in prompt:
        if not done:
            return [{"type": "tool_use", "id": "toolu_exit_plan", "name": "ExitPlanMode", "input": {}}]
        return [{"type": "text", "text": "Revised after: " + done[-1][1][:300]}]
    if "PLAN-ME" in prompt:
        if not done:
            everything = system_text(body) + "\n" + "\n".join(text_of(m.get("content")) for m in messages)
            paths = re.findall(r"(/[^\s`'\"]*/plans/[^\s`'\"]+\.md)", everything)
            if not paths:
                return [{"type": "text", "text": "I found no plan file path."}]
            plan = "# Plan\n1. Add NOTES.md with a greeting\n2. Done"
            return [{"type": "text", "text": "I'll write the plan."},
                    {"type": "tool_use", "id": "toolu_write_plan", "name": "Write", "input": {"file_path": paths[-1], "content": plan}}]
        if tools[-1] == "Write" and "ExitPlanMode" not in tools:
            return [{"type": "tool_use", "id": "toolu_exit_plan", "name": "ExitPlanMode", "input": {}}]
        if tools[-1] == "ExitPlanMode":
            _, result, is_error = done[-1]
            if is_error or "approved" not in result.lower():
                return [{"type": "text", "text": "Revised after: " + result[:300]}]
            return [{"type": "tool_use", "id": "toolu_edit", "name": "Write", "input": {"file_path": "./NOTES.md", "content": "hello from the plan\n"}}]
        if tools[-1] == "Write" and "PLAN-ME-THEN-BASH" in prompt:
            # A shell command that writes a file: an approved plan does not grant it.
            return [{"type": "tool_use", "id": "toolu_bash_after_plan", "name": "Bash",
                     "input": {"command": "echo from-bash > bash-wrote.txt", "description": "Write a file from the shell"}}]
        if tools[-1] == "Bash":
            return [{"type": "text", "text": "Done. The shell said: " + done[-1][1][:300]}]
        return [{"type": "text", "text": "Done."}]
    if "ASK-ME" in prompt:
        if not done:
            questions = [
                {"question": "Which colour?", "header": "Colour", "multiSelect": False,
                 "options": [{"label": "red", "description": "warm"}, {"label": "blue", "description": "cool"}]},
                {"question": "Which size?", "header": "Size", "multiSelect": False,
                 "options": [{"label": "small", "description": "s"}, {"label": "large", "description": "l"}]},
            ]
            return [{"type": "tool_use", "id": "toolu_ask", "name": "AskUserQuestion", "input": {"questions": questions}}]
        return [{"type": "text", "text": "Answers: " + done[-1][1][:500]}]
    if "TOOL-ME" in prompt:
        if not done:
            return [{"type": "tool_use", "id": "toolu_bash", "name": "Bash", "input": {"command": "touch made-by-tool.txt", "description": "Make a file"}}]
        return [{"type": "text", "text": "Ran it."}]
    if "LONG-ME" in prompt:
        return [{"type": "text", "text": ("The quick brown fox jumps over the lazy dog. " * 7000).strip()}]
    return [{"type": "text", "text": "Hello from the fake API."}]


def sse(event, data):
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.log_request_line(None)
        self.reply_json(404, {"type": "error", "error": {"type": "not_found_error", "message": "not here"}})

    def log_request_line(self, body):
        with LOG_LOCK, open(self.server.log_path, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "key": self.headers.get("x-api-key"), "body": body}) + "\n")

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.log_request_line(body)
        if self.headers.get("x-api-key") == "bad-key":
            return self.reply_json(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        if self.path.startswith("/v1/messages/count_tokens"):
            return self.reply_json(200, {"input_tokens": 42})
        if not self.path.startswith("/v1/messages"):
            return self.reply_json(404, {"type": "error", "error": {"type": "not_found_error", "message": "not here"}})
        blocks = decide(body)
        model = body.get("model", "claude-sonnet-4-5")
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": blocks,
                   "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 10}}
        if not body.get("stream"):
            return self.reply_json(200, message)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        start = dict(message, content=[], stop_reason=None)
        out = [sse("message_start", {"type": "message_start", "message": start})]
        for i, b in enumerate(blocks):
            if b["type"] == "text":
                out.append(sse("content_block_start", {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}))
                text = b["text"]
                for j in range(0, len(text), 4000):
                    out.append(sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text[j:j + 4000]}}))
            else:
                out.append(sse("content_block_start", {"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}}))
                out.append(sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": json.dumps(b["input"])}}))
            out.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))
        out.append(sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 10}}))
        out.append(sse("message_stop", {"type": "message_stop"}))
        self.wfile.write(b"".join(out))
        self.wfile.flush()
        self.close_connection = True


def main():
    port_file, log_path = sys.argv[1], sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.log_path = log_path
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
