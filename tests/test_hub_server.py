"""The test Hub (`hub_server`) answers `huggingface_hub`'s own clients as the Hub does: downloads (regular and LFS
files), listings, byte ranges, the Hub's error codes, uploads and deletions."""

import pytest
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

FILES = {"config.json": '{"a": 1}', "weights/model.safetensors": bytes(range(256)) * 4, "notes/readme.txt": "hello"}


def test_downloads_listings_ranges_and_errors(hub_server):
    first = hub_server.add_repo("org/repo", FILES)
    second = hub_server.add_repo("org/repo", {**FILES, "config.json": '{"a": 2}'})
    assert open(hf_hub_download("org/repo", "config.json")).read() == '{"a": 2}'
    assert open(hf_hub_download("org/repo", "config.json", revision=first)).read() == '{"a": 1}'  # any commit
    with open(hf_hub_download("org/repo", "weights/model.safetensors"), "rb") as file:  # through the LFS redirect
        assert file.read() == FILES["weights/model.safetensors"]
    assert ("HEAD", "/org/repo/resolve/main/weights/model.safetensors") in hub_server.requests
    assert any(path.startswith("/lfs/") for _, path in hub_server.requests)  # the blob came from the "CDN"
    snapshot = snapshot_download("org/repo", revision=second)
    assert open(f"{snapshot}/notes/readme.txt").read() == "hello"

    fs = HfFileSystem()
    assert sorted(fs.ls("org/repo", detail=False)) == ["org/repo/config.json", "org/repo/notes", "org/repo/weights"]
    assert fs.glob("org/repo/**/*.safetensors") == ["org/repo/weights/model.safetensors"]
    assert fs.info("org/repo/weights/model.safetensors")["size"] == 1024 and fs.isdir("org/repo/notes")
    assert not fs.exists("org/repo/missing.txt")
    with fs.open("org/repo/weights/model.safetensors", "rb", block_size=16) as file:
        file.seek(300)
        assert file.read(4) == bytes([44, 45, 46, 47])

    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/repo", "adapter_config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/repo", "config.json", revision="v9")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("org/missing")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().dataset_info("org/repo")  # a model repository, not a dataset


def test_uploads_and_deletions(hub_server, tmp_path):
    api = HfApi()
    url = api.create_repo("org/new", repo_type="dataset")
    assert url == f"{hub_server.url}/datasets/org/new" and api.create_repo(
        "org/new", repo_type="dataset", exist_ok=True
    )
    with pytest.raises(HfHubHTTPError, match="409"):
        api.create_repo("org/new", repo_type="dataset")
    (tmp_path / "up" / "data").mkdir(parents=True)
    (tmp_path / "up" / "data" / "train.parquet").write_bytes(b"PAR1" * 100)
    (tmp_path / "up" / "README.md").write_text("---\nlicense: mit\n---\n# card\n")
    api.upload_folder(repo_id="org/new", repo_type="dataset", folder_path=tmp_path / "up")
    files = hub_server.files("org/new", "dataset")
    assert files["data/train.parquet"] == b"PAR1" * 100 and files["README.md"].startswith(b"---\nlicense: mit")
    assert any(path == "/datasets/org/new.git/info/lfs/objects/batch" for _, path in hub_server.requests)
    assert api.dataset_info("org/new").card_data.license == "mit"
    api.delete_folder("data", repo_id="org/new", repo_type="dataset")
    api.delete_file("README.md", repo_id="org/new", repo_type="dataset")
    assert sorted(hub_server.files("org/new", "dataset")) == [".gitattributes"]
