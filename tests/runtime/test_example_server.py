"""examples/serve_packets.py: a loopback HTTP receiver answers packets with generate(), refuses bad ones."""

import http.client
import importlib.util
import json
import threading
import urllib.parse
from pathlib import Path

import pytest
import torch

import lw_runtime
from lw_runtime import BottleneckedGatedTranslator, TranslatorConfig, encode_soft_tokens, translator_fingerprint

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serve_packets.py"
MAX_NEW_TOKENS = 4
TEXT = "\nAnswer:"


def load_example():
    spec = importlib.util.spec_from_file_location("serve_packets", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_translator(target, seed):
    torch.manual_seed(seed)
    cfg = TranslatorConfig(source_dim=40, target_dim=576, num_soft_tokens=4, depth=1, num_heads=4,
                           bottleneck_dim=32, dropout=0.0, target_rms=target.embedding_rms())
    return BottleneckedGatedTranslator(cfg).eval()


@pytest.fixture(scope="module")
def served(target):
    serve = load_example()
    translator = tiny_translator(target, seed=0)
    server = serve.make_server(target, translator, port=0, max_new_tokens=MAX_NEW_TOKENS, max_body_bytes=1 << 20)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield serve, translator, f"http://{host}:{port}/generate"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def make_packets(translator, batch=2, chunk_tokens=None, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        soft = translator(torch.randn(batch, 5, 40))
    return encode_soft_tokens(soft, translator_fingerprint(translator), bits=8, chunk_tokens=chunk_tokens)


def test_reply_is_token_identical_to_local_generate_on_the_same_packets(served, target):
    serve, translator, url = served
    packets = make_packets(translator, batch=2, chunk_tokens=3)
    assert len(packets) == 2
    got = serve.post_packets(url, packets[::-1], TEXT)  # chunks in any order
    soft = lw_runtime.decode(packets, translator=translator)
    want = lw_runtime.generate(target, soft, texts=[TEXT] * 2, max_new_tokens=MAX_NEW_TOKENS)
    assert got == want
    assert len(got) == 2 and all(isinstance(t, str) for t in got)


def test_bit_flipped_packet_gets_400_checksum_error(served):
    serve, translator, url = served
    packet = bytearray(make_packets(translator, batch=1)[0])
    packet[100] ^= 0x10  # inside the payload
    with pytest.raises(serve.ServerError) as e:
        serve.post_packets(url, [bytes(packet)], TEXT)
    assert (e.value.status, e.value.error) == (400, "ChecksumError")


def test_packet_for_another_translator_gets_400_fingerprint_mismatch(served, target):
    serve, _, url = served
    other = tiny_translator(target, seed=7)
    with pytest.raises(serve.ServerError) as e:
        serve.post_packets(url, make_packets(other, batch=1), TEXT)
    assert (e.value.status, e.value.error) == (400, "FingerprintMismatchError")


def test_malformed_body_gets_400_and_oversized_body_gets_413(served):
    serve, _, url = served
    with pytest.raises(serve.ServerError) as e:
        serve.post_packets(url, [], TEXT)
    assert (e.value.status, e.value.error) == (400, "BadRequest")
    # Announce a body over the cap and send none of it: the answer must come before any body is read.
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("POST", parts.path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(2 << 20))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"] == "PayloadTooLarge"
    finally:
        connection.close()


def test_server_still_answers_after_refusals(served, target):
    serve, translator, url = served
    assert len(serve.post_packets(url, make_packets(translator, batch=1), TEXT)) == 1
