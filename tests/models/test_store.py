"""The model store: verified fetches, clear errors when offline or when a checksum is wrong."""

import dataclasses

import pytest

from veil.models import store


def test_cached_files_match_their_pinned_checksums():
    paths = store.fetch_many(list(store.MODELS))
    for name, path in paths.items():
        assert path.stat().st_size == store.ARTIFACTS[name].size
        assert store.sha256_file(path) == store.ARTIFACTS[name].sha256


def test_a_corrupted_cache_file_is_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    path = store.fetch("mtcnn/pnet.pt")
    path.write_bytes(b"tampered")
    assert store.sha256_file(store.fetch("mtcnn/pnet.pt")) == store.ARTIFACTS["mtcnn/pnet.pt"].sha256


def test_checksum_mismatch_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    real = store.ARTIFACTS["mtcnn/pnet.pt"]
    fake = dataclasses.replace(real, name="test/pnet-wrong-hash", sha256="0" * 64)
    store.register_artifact(fake)
    try:
        with pytest.raises(store.StoreError, match="checksum mismatch for test/pnet-wrong-hash"):
            store.fetch("test/pnet-wrong-hash")
    finally:
        del store.ARTIFACTS["test/pnet-wrong-hash"]


def test_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_INDEX", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(store.StoreError, match=r"cannot fetch facenet-pytorch==2\.6\.0"):
        store.fetch("mtcnn/pnet.pt")
    assert not (tmp_path / "files").exists() or not any((tmp_path / "files").rglob("*.pt"))


def test_unknown_name_lists_known_ones():
    with pytest.raises(store.StoreError, match="mtcnn/pnet.pt"):
        store.fetch("no/such/file")
