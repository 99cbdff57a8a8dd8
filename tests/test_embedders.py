from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from memvault.config import load_settings
from memvault.embed import make_embedder
from memvault.embed.base import PROBE_TEXTS
from memvault.embed.graph import sha256_file
from memvault.embed.http import OllamaEmbedder, OpenAIEmbedder
from memvault.embed.local import LocalEmbedder, model_file
from memvault.errors import ConfigError, EmbedderError
from tests.peers.embedding_server import EmbeddingServer


def test_local_embedder_gives_normalized_meaningful_vectors(local_embedder: LocalEmbedder) -> None:
    vectors = local_embedder.embed(
        ["I love pizza", "Pizza is my favourite food", "The central bank raised interest rates"]
    )
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.7
    assert similarity[0, 2] < 0.3


def test_local_embedder_is_order_and_batch_independent(local_embedder: LocalEmbedder) -> None:
    texts = [f"memory number {i} " + "word " * (i % 7) for i in range(70)]
    together = local_embedder.embed(texts)
    alone = np.vstack([local_embedder.embed([t]) for t in texts[:5]])
    # Each text runs alone (int8 activations are quantized per run): no batch effects at all.
    np.testing.assert_array_equal(together[:5], alone)
    assert local_embedder.embed([]).shape == (0, 384)


def test_local_embedder_truncates_long_text(local_embedder: LocalEmbedder) -> None:
    vector = local_embedder.embed(["word " * 5000])
    assert vector.shape == (1, 384)
    assert np.isfinite(vector).all()


def test_local_identity_is_stable_and_fingerprinted(local_embedder: LocalEmbedder) -> None:
    identity = local_embedder.identity()
    assert identity.key == "local:all-MiniLM-L6-v2-q8:384"
    assert identity.probes.shape == (len(PROBE_TEXTS), 384)
    again = LocalEmbedder().identity()
    assert again.same_model(identity)
    assert again.fingerprint == identity.fingerprint


def test_derived_graph_is_cached_verified_and_rederived_when_corrupt(
    tmp_path: Path, local_embedder: LocalEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    first = LocalEmbedder(threads=1, cache_dir=cache)
    expected = local_embedder.embed(["a cached graph gives the same vectors"])
    np.testing.assert_array_equal(first.embed(["a cached graph gives the same vectors"]),
                                  expected)
    (graph,) = cache.glob("*.onnx")
    recorded = graph.with_suffix(".sha256").read_text().strip()
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01  # a flipped bit in the cached file
    graph.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="memvault.embed"):
        second = LocalEmbedder(threads=1, cache_dir=cache)
    assert "does not match its recorded sha256" in caplog.text
    assert sha256_file(graph) == recorded  # derived again, identical
    np.testing.assert_array_equal(second.embed(["a cached graph gives the same vectors"]),
                                  expected)


def test_unwritable_cache_still_gives_a_working_embedder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    with caplog.at_level("WARNING", logger="memvault.embed"):
        embedder = LocalEmbedder(threads=1, cache_dir=blocker / "models")
    assert "cannot cache the model graph" in caplog.text
    assert embedder.embed(["still works"]).shape == (1, 384)


def test_local_embedder_refuses_a_tampered_model(tmp_path: Path) -> None:
    copy = tmp_path / "model.onnx"
    shutil.copyfile(model_file(), copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(EmbedderError, match="sha256"):
        LocalEmbedder(model_path=copy)


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
def test_http_embedders_speak_their_protocol(protocol: str) -> None:
    with EmbeddingServer(dims=48, api_key="k-123") as server:
        cls = OpenAIEmbedder if protocol == "openai" else OllamaEmbedder
        base = server.url + ("/v1" if protocol == "openai" else "")
        embedder = cls("test-model", base, api_key="k-123", batch_size=4)
        texts = [f"text {i}" for i in range(10)]
        vectors = embedder.embed(texts)
        assert vectors.shape == (10, 48)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        # Order must follow the input even though the OpenAI peer answers in reverse.
        single = embedder.embed(["text 7"])
        np.testing.assert_allclose(vectors[7], single[0], atol=1e-6)
        posts = [r for r in server.requests if r["method"] == "POST"]
        assert [len(r["body"]["input"]) for r in posts[:3]] == [4, 4, 2]  # batching
        assert posts[0]["body"]["model"] == "test-model"
        assert posts[0]["headers"]["authorization"] == "Bearer k-123"
        identity = embedder.identity()
        assert identity.key == f"{protocol}:test-model:48"


def test_http_embedder_retries_server_errors() -> None:
    with EmbeddingServer(dims=8) as server:
        embedder = OpenAIEmbedder("m", server.url + "/v1", retries=2)
        server.fail_next = [503, 500]
        assert embedder.embed(["hello"]).shape == (1, 8)
        server.fail_next = [503, 503, 503]
        with pytest.raises(EmbedderError, match="HTTP 503") as caught:
            embedder.embed(["hello"])
        assert server.url in str(caught.value)


def test_http_embedder_wrong_key_names_url_and_fix() -> None:
    with EmbeddingServer(dims=8, api_key="right") as server:
        embedder = OpenAIEmbedder("m", server.url + "/v1", api_key="wrong")
        with pytest.raises(EmbedderError) as caught:
            embedder.embed(["hello"])
        assert "HTTP 401" in str(caught.value)
        assert f"{server.url}/v1/embeddings" in str(caught.value)
        assert "MEMVAULT_EMBEDDER_API_KEY" in str(caught.value.hint)


def test_http_embedder_unreachable_names_the_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    embedder = OllamaEmbedder("m", f"http://127.0.0.1:{port}", timeout=2, retries=0)
    with pytest.raises(EmbedderError) as caught:
        embedder.embed(["hello"])
    assert f"127.0.0.1:{port}/api/embed" in str(caught.value)
    assert "MEMVAULT_EMBEDDER_URL" in str(caught.value.hint)


def test_http_embedder_detects_a_dimension_change() -> None:
    with EmbeddingServer(dims=16) as server:
        embedder = OpenAIEmbedder("m", server.url + "/v1")
        embedder.embed(["a"])
        server.dims = 24
        with pytest.raises(EmbedderError, match="changed dimension from 16 to 24"):
            embedder.embed(["b"])


def test_identity_catches_a_model_swapped_behind_the_same_name() -> None:
    with EmbeddingServer(dims=32) as server:
        first = OpenAIEmbedder("same-name", server.url + "/v1").identity()
        again = OpenAIEmbedder("same-name", server.url + "/v1").identity()
        assert first.same_model(again)
        # Swap the weights behind the name: the peer derives vectors from another seed.
        server.routes[("POST", "/v1/embeddings")] = _swapped(server)
        swapped = OpenAIEmbedder("same-name", server.url + "/v1").identity()
        assert swapped.key == first.key
        assert not first.same_model(swapped)


def _swapped(server: EmbeddingServer):  # type: ignore[no-untyped-def]
    original = server._openai

    def route(body, headers):  # type: ignore[no-untyped-def]
        return original({**body, "model": body["model"] + "-v2"}, headers)

    return route


def test_make_embedder_from_settings() -> None:
    with EmbeddingServer(dims=12) as server:
        settings = load_settings({"embedder": "ollama:nomic", "embedder_url": server.url})
        embedder = make_embedder(settings.embedder, settings)
        assert embedder.identity().key == "ollama:nomic:12"
    with pytest.raises(ConfigError):
        make_embedder("word2vec", load_settings())
