"""Serve a frozen target over HTTP on loopback: receive LatentWire packets, answer with ``generate()``.

A receiver in a few dozen lines of the standard library (``http.server`` + ``urllib``), no new
dependency. ``POST /generate`` takes a JSON body ``{"packets": [base64, ...], "text": "..."}``
holding the packets of ONE message (any order), decodes them with ``lw_runtime.decode`` against
the loaded translator's fingerprint, and answers ``{"texts": [...]}`` (one string per row).
Decisions: JSON + base64 rather than raw concatenated packets, so chunk boundaries need no framing;
any ``WireFormatError`` is the sender's fault and becomes HTTP 400 naming the error class; a body
over ``max_body_bytes`` is refused with 413 before it is read; one lock serialises ``generate``
because the target model is shared by the server's threads.
Left out: TLS, authentication (the CRC catches accidents, not attackers), batching across requests,
streaming. Bind to loopback unless something in front of it handles those.

    python examples/serve_packets.py --translator runs/default/translator --target embedded:smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

import lw_runtime

MAX_BODY_BYTES = 16 * 1024 * 1024


class _BadRequest(ValueError):
    """The body is not the JSON this endpoint expects (the packets themselves may still be fine)."""


def _parse_body(body: bytes) -> tuple[list[bytes], str]:
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _BadRequest(f"body is not JSON: {e}") from None
    if not isinstance(request, dict) or not isinstance(request.get("packets"), list) or not request["packets"]:
        raise _BadRequest('body must be {"packets": [base64, ...], "text": "..."} with at least one packet')
    text = request.get("text", "")
    if not isinstance(text, str):
        raise _BadRequest('"text" must be a string')
    try:
        packets = [base64.b64decode(p, validate=True) for p in request["packets"]]
    except (TypeError, binascii.Error) as e:
        raise _BadRequest(f"a packet is not valid base64: {e}") from None
    return packets, text


def make_server(
    target: lw_runtime.LoadedModel,
    translator: lw_runtime.BottleneckedGatedTranslator,
    host: str = "127.0.0.1",
    port: int = 0,
    max_new_tokens: int = 16,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> ThreadingHTTPServer:
    """A server (not yet serving; call ``serve_forever``) answering ``POST /generate``.

    ``port=0`` picks a free port: read it back from ``server.server_address``.
    """
    generate_lock = threading.Lock()
    model_dtype = next(target.model.parameters()).dtype

    class PacketHandler(BaseHTTPRequestHandler):
        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, error: str, message: str) -> None:
            self.close_connection = True  # the unread rest of a refused body must not be parsed as a request
            self._reply(status, {"error": error, "message": message})

        def do_POST(self) -> None:
            if self.path != "/generate":
                return self._error(404, "NotFound", f"no endpoint {self.path}; use POST /generate")
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._error(411, "LengthRequired", "Content-Length header is required")
            if length < 0 or length > max_body_bytes:
                return self._error(413, "PayloadTooLarge", f"body of {length} bytes exceeds {max_body_bytes}")
            try:
                packets, text = _parse_body(self.rfile.read(length))
                soft_tokens = lw_runtime.decode(packets, translator=translator, dtype=model_dtype, device=target.device)
            except _BadRequest as e:
                return self._error(400, "BadRequest", str(e))
            except lw_runtime.WireFormatError as e:
                return self._error(400, type(e).__name__, str(e))
            with generate_lock, torch.no_grad():
                texts = lw_runtime.generate(
                    target, soft_tokens, texts=[text] * soft_tokens.shape[0], max_new_tokens=max_new_tokens
                )
            self._reply(200, {"texts": texts})

        def log_message(self, format, *args) -> None:
            """No per-request access log: keeps test and terminal output quiet."""

    return ThreadingHTTPServer((host, port), PacketHandler)


class ServerError(RuntimeError):
    """The server refused the request; ``status``, ``error`` (class name) and ``message`` say why."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(f"HTTP {status} {error}: {message}")
        self.status, self.error, self.message = status, error, message


def post_packets(url: str, packets: list[bytes], text: str = "", timeout: float = 120.0) -> list[str]:
    """Send the packets of one message to ``url`` (``http://host:port/generate``); return the texts.

    Raises ``ServerError`` for an HTTP error answer.
    """
    body = json.dumps({"packets": [base64.b64encode(p).decode("ascii") for p in packets], "text": text}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["texts"]
    except urllib.error.HTTPError as e:
        try:
            answer = json.loads(e.read())
        except ValueError:
            answer = {}
        raise ServerError(e.code, answer.get("error", "HTTPError"), answer.get("message", str(e))) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--translator", required=True, help="folder written by save_pretrained")
    parser.add_argument("--target", default=lw_runtime.EMBEDDED_TARGET, help="target model name or path")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)

    translator = lw_runtime.BottleneckedGatedTranslator.from_pretrained(args.translator).eval()
    target = lw_runtime.load_model(args.target)
    translator.check_compatible(translator.config.source_dim, target.hidden_size)
    server = make_server(target, translator, args.host, args.port, args.max_new_tokens)
    host, port = server.server_address[:2]
    print(f"serving POST http://{host}:{port}/generate (Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt), contextlib.closing(server):  # Ctrl-C stops it cleanly
        server.serve_forever()


if __name__ == "__main__":
    main()
