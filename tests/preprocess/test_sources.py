"""Sources: folder and zip listing, unsafe zip members, the remote zip over HTTP."""

import zipfile

import pytest

from preprocess import layouts, sources


def test_is_safe_member():
    assert sources.is_safe_member("UCF101/v_A_g01_c01.avi")
    for name in ("../v_A_g01_c01.avi", "/etc/v_A_g01_c01.avi", "a/../../b.avi",
                 "C:/x/v_A_g01_c01.avi", "..\\v_A_g01_c01.avi"):
        assert not sources.is_safe_member(name), name


def test_zip_source_lists_and_copies_members(tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("UCF101/v_A_g01_c01.avi", b"abc")
        zf.writestr("../evil/v_B_g01_c01.avi", b"evil")
        zf.writestr("UCF101/notes.txt", b"hello")
    source = sources.open_source(str(archive))
    listing = layouts.list_source(source)
    videos, ignored = listing.videos, listing.ignored
    assert [v.video_id for v in videos] == ["v_A_g01_c01"]
    assert ignored == ["UCF101/notes.txt"]
    assert source.unsafe_members == ["../evil/v_B_g01_c01.avi"]
    with source.local_copy(videos[0]) as path:
        assert open(path, "rb").read() == b"abc"
        assert str(tmp_path) not in path
    assert not (tmp_path.parent / "evil").exists()


def test_missing_sources_say_so(tmp_path):
    with pytest.raises(sources.SourceError, match="does not exist"):
        sources.open_source(str(tmp_path / "nowhere")).list_files()
    with pytest.raises(sources.SourceError, match="does not exist"):
        sources.open_source(str(tmp_path / "nowhere.zip"))
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(sources.SourceError, match="not a valid zip"):
        sources.open_source(str(bad))


def test_remote_zip_fetches_only_chosen_members(tmp_path, range_server):
    archive = tmp_path / "remote.zip"
    payloads = {f"UCF101/v_C{i}_g01_c01.avi": bytes([i]) * 200_000 for i in range(6)}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for name, data in payloads.items():
            zf.writestr(name, data)
    server = range_server()
    source = sources.open_source(server.url("remote.zip"))
    videos = layouts.list_source(source).videos
    assert len(videos) == 6
    listing_bytes = server.bytes_sent()
    with source.local_copy(videos[1]) as path:
        assert open(path, "rb").read() == payloads["UCF101/v_C1_g01_c01.avi"]
    fetched = server.bytes_sent() - listing_bytes
    assert 200_000 <= fetched < 300_000
    assert server.bytes_sent() < archive.stat().st_size / 3


def test_remote_zip_retries_transient_errors(tmp_path, range_server):
    archive = tmp_path / "flaky.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("UCF101/v_A_g01_c01.avi", b"video-bytes")
    server = range_server(fail_first=2)
    source = sources.open_source(server.url("flaky.zip"))
    videos = layouts.list_source(source).videos
    with source.local_copy(videos[0]) as path:
        assert open(path, "rb").read() == b"video-bytes"
    assert server.failures_served == 2


def test_remote_zip_unreachable_is_a_source_error(range_server):
    server = range_server()
    with pytest.raises(sources.SourceError, match="cannot read the remote zip"):
        sources.open_source(server.url("absent.zip"))
