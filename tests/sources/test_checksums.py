"""The checksums downloads are checked against: Dropbox's content_hash against values computed
elsewhere, fed in every way a download can cut its chunks; which checksums are used; and a
file that changed after it was listed told apart from damaged bytes."""

from __future__ import annotations

import hashlib

import pytest

from imageimport.sources.checksums import ChecksumMismatch, verifier
from tests.fakes.dropbox import content_hash
from tests.fakes.folder import FakeFile

B = 4 * 1024 * 1024  # Dropbox's block
PATTERN = bytes(range(256))

# Known values of rdrop2's tests (tests/testthat/test-08-rdrop2-content-hash.R), an
# implementation of its own: a short string, one whole block of 0..255 repeated, that block
# and one byte 255 more, and three and a half blocks of 0..255.
KNOWN = [
    (b"hello rdrop2", "1aa2b7623dfff520c4abdc1227d10bc4e229b74005b66b3458345830e556f4de"),
    (PATTERN * (B // 256), "894bbb52d1212d6bcbe9967f1a2169138c4d4af0c8dfbaeae86cd1d3f0c03faf"),
    (
        PATTERN * (B // 256) + b"\xff",
        "9149387a91f71c7c2149b8427d15526b71c1a38d6c6f999ad71486a2ce788d57",
    ),
    (
        PATTERN * (B * 7 // 2 // 256),
        "f61d3ae93fa4f7646d37949fc0885141bf682faa9a130896b93459c650335d0f",
    ),
]


def assert_content_hash(data: bytes, chunk_sizes: list[int], expected: str) -> None:
    """A download of `data` in chunks of `chunk_sizes` (then the rest) matches `expected`."""
    check = verifier(f"dropbox:{expected}", {"dropbox": "Dropbox"}, "x.bin")
    assert check is not None
    position = 0
    for size in chunk_sizes:
        check.update(data[position : position + size])
        position += size
    check.update(data[position:])
    check.verify(lambda: None)


@pytest.mark.parametrize(("data", "expected"), KNOWN, ids=["short", "block", "block+1", "3.5"])
def test_content_hash_matches_known_values(data: bytes, expected: str) -> None:
    assert_content_hash(data, [], expected)
    assert_content_hash(data, [256 * 1024] * (len(data) // (256 * 1024)), expected)


# The chunkings of Dropbox's own tests (dropbox-api-content-hasher, python/run_tests.py),
# each checked against its reference: the SHA-256 of the blocks' SHA-256s.
@pytest.mark.parametrize(
    "chunk_sizes",
    [
        [0],
        [100],
        [100, 10],
        [B - 1],
        [B],
        [B + 1],
        [B - 2, 1],
        [B - 2, 2],
        [B - 2, 3],
        [B - 2, B + 1],
        [B - 2, B + 2],
        [B - 2, B + 3],
        [5, 5, 5],
        [5, 5, 5, B],
        [5, 5, 5, 3 * B],
        [5, 5, 5, 3 * B, 5, 5, 5, 3 * B],
    ],
)
def test_content_hash_whatever_the_chunks(chunk_sizes: list[int]) -> None:
    data = (PATTERN * (sum(chunk_sizes) // 256 + 1))[: sum(chunk_sizes)]
    blocks = (hashlib.sha256(data[i : i + B]).digest() for i in range(0, len(data), B))
    reference = hashlib.sha256(b"".join(blocks)).hexdigest()
    assert_content_hash(data, chunk_sizes, reference)


def test_the_fake_dropbox_hashes_like_the_app() -> None:
    file = FakeFile("big.bin", b"start", size=2 * B + 12345)
    assert_content_hash(file.read(), [], content_hash(file))


DECLARED = {"md5": "Google Drive", "dropbox": "Dropbox"}


def test_a_download_matching_its_checksum_passes_and_one_that_does_not_is_retried() -> None:
    body = b"the bytes of a photo" * 1000
    check = verifier(f"md5:{hashlib.md5(body).hexdigest().upper()}", DECLARED, "a/photo.jpg")
    assert check is not None
    check.update(body[:7])
    check.update(body[7:])
    check.verify(lambda: pytest.fail("the source is asked again only after a mismatch"))

    expected = hashlib.md5(body).hexdigest()
    check = verifier(f"md5:{expected}", DECLARED, "a/photo.jpg")
    assert check is not None
    check.update(body[:-1] + b"!")
    with pytest.raises(ChecksumMismatch) as raised:
        check.verify(lambda: f"md5:{expected}")  # the file did not change meanwhile
    assert str(raised.value).startswith(
        "The bytes downloaded for 'a/photo.jpg' do not match the checksum Google Drive gives "
        f"for this file (md5 {expected}, the bytes have "
    )


@pytest.mark.parametrize(
    "checksum",
    [
        None,
        "",
        "md5:",
        "md5:not-hex-at-all-not-hex-at-all-",
        "md5:" + "0" * 31,
        "dropbox:" + "0" * 32,  # the length of an md5, not of a content_hash
        "sha1:" + "0" * 40,  # a kind nothing computes
    ],
)
def test_checksums_that_cannot_be_checked_are_not(checksum: str | None) -> None:
    assert verifier(checksum, DECLARED, "x.jpg") is None


def test_only_the_kinds_a_route_declares_are_checked() -> None:
    checksum = "md5:" + "0" * 32
    assert verifier(checksum, {}, "x.jpg") is None
    assert verifier(checksum, {"dropbox": "Dropbox"}, "x.jpg") is None
    assert verifier(checksum, {"md5": "Google Drive"}, "x.jpg") is not None


def test_a_file_changed_after_it_was_listed_passes_with_the_checksum_it_has_now() -> None:
    listed, now = b"the photo as it was listed", b"the photo fixed at its source"
    check = verifier(f"md5:{hashlib.md5(listed).hexdigest()}", DECLARED, "x.jpg")
    assert check is not None
    check.update(now)
    # The checksum the bytes matched, which the item records in place of the listed one.
    got = check.verify(lambda: f"md5:{hashlib.md5(now).hexdigest().upper()}")
    assert got == f"md5:{hashlib.md5(now).hexdigest()}"
