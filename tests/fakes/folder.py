"""A folder description the fake Drive and Dropbox servers are built from."""

from __future__ import annotations

import hashlib
import io
import random
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from PIL import Image

PATTERN_BLOCK = 64 * 1024
MODIFIED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeFile:
    name: str
    content: bytes = b""
    mime_type: str = "application/octet-stream"
    # A file bigger than memory should hold: `size` bytes that start with `content`
    # and go on with a repeating pattern, generated on demand.
    size: int | None = None
    shortcut_to: str | None = None  # Drive only: the id of the file this shortcut points at
    id: str = ""
    modified: datetime = MODIFIED_AT  # when its bytes last changed (see `overwrite`)

    def overwrite(self, content: bytes) -> None:
        """New bytes under the same id, as an edit saved a minute after the last one."""
        self.content = content
        self.size = None
        self.modified += timedelta(minutes=1)

    @property
    def length(self) -> int:
        return self.size if self.size is not None else len(self.content)

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of the file, in blocks."""
        end = self.length if end is None else min(end, self.length)
        position = start
        if position < len(self.content):
            head = self.content[position : min(end, len(self.content))]
            yield head
            position += len(head)
        block = bytes(range(256)) * (PATTERN_BLOCK // 256)
        while position < end:
            offset = (position - len(self.content)) % PATTERN_BLOCK
            piece = block[offset : offset + min(PATTERN_BLOCK - offset, end - position)]
            yield piece
            position += len(piece)

    def read(self) -> bytes:
        return b"".join(self.chunks())

    @property
    def md5(self) -> str:
        digest = hashlib.md5()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()


# For `Corruption`: every download of the file answers wrong bytes.
EVERY_DOWNLOAD = 1 << 62


class Corruption:
    """Downloads that answer wrong bytes, the way a faulty proxy or a bit flipped on the way
    delivers them: the right status, length and headers, one byte of the body changed (in its
    middle, so the start still looks like the image it was). `times` maps a file id to how
    many of its downloads come out wrong (EVERY_DOWNLOAD: all of them); the ones after those
    are right. `served` counts the wrong ones each file got."""

    def __init__(self, times: Mapping[str, int] | None = None) -> None:
        self.times = dict(times or {})
        self.served: Counter[str] = Counter()
        self._lock = threading.Lock()

    def body(self, file: FakeFile, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of `file` as this download serves them."""
        with self._lock:
            wrong = self.served[file.id] < self.times.get(file.id, 0)
            if wrong:
                self.served[file.id] += 1
        chunks = file.chunks(start, end)
        return _flipped(chunks, file.length // 2 - start) if wrong else chunks


def _flipped(chunks: Iterator[bytes], at: int) -> Iterator[bytes]:
    position = 0
    for chunk in chunks:
        if 0 <= at - position < len(chunk):
            index = at - position
            chunk = chunk[:index] + bytes([chunk[index] ^ 0xFF]) + chunk[index + 1 :]
        position += len(chunk)
        yield chunk


@dataclass
class FakeFolder:
    name: str
    children: list[FakeFile | FakeFolder] = field(default_factory=list)
    id: str = ""
    public: bool = True  # a private folder answers like the real service does: not found

    def __post_init__(self) -> None:
        assign_ids(self)

    def walk(self, prefix: str = "") -> Iterator[tuple[str, FakeFile | FakeFolder]]:
        """(path inside this folder, node) for every descendant, depth first."""
        for child in self.children:
            path = f"{prefix}{child.name}"
            yield path, child
            if isinstance(child, FakeFolder):
                yield from child.walk(path + "/")

    def files(self) -> list[tuple[str, FakeFile]]:
        return [(p, n) for p, n in self.walk() if isinstance(n, FakeFile)]

    def find(self, node_id: str) -> FakeFile | FakeFolder | None:
        if self.id == node_id:
            return self
        return next((n for _, n in self.walk() if n.id == node_id), None)

    def parent_of(self, node_id: str) -> FakeFolder | None:
        for _, node in [("", self), *self.walk()]:
            if isinstance(node, FakeFolder) and any(c.id == node_id for c in node.children):
                return node
        return None


def add_file(root: FakeFolder, parent: FakeFolder, file: FakeFile) -> None:
    """A file uploaded to `parent` (under `root`) while a server serves it."""
    parent.children.append(file)
    assign_ids(root)


def remove_file(root: FakeFolder, file: FakeFile) -> None:
    """A file deleted from the folder `root` while a server serves it."""
    parent = root.parent_of(file.id)
    assert parent is not None, f"{file.name} is not in {root.name}"
    parent.children.remove(file)


def assign_ids(root: FakeFolder) -> None:
    """Deterministic Drive-like ids (33 chars of [A-Za-z0-9_-]) from each node's path."""
    if not root.id:
        root.id = _make_id("root:" + root.name)
    for path, node in root.walk():
        if not node.id:
            node.id = _make_id(root.id + "/" + path)


def _make_id(seed: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    digest = hashlib.sha256(seed.encode()).digest()
    return "1" + "".join(alphabet[b % 64] for b in digest[:32])


def make_image(
    width: int,
    height: int,
    fmt: str = "JPEG",
    seed: int = 0,
    exif: Mapping[int, object] | None = None,
) -> bytes:
    """A real image with some texture, so encoders do not shrink it to nothing."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = (x0, y0, min(width, x0 + rng.randrange(1, width)), min(height, y0 + height // 3))
        image.paste(tuple(rng.randrange(256) for _ in range(3)), box)
    out = io.BytesIO()
    kwargs: dict[str, object] = {}
    if exif:
        data = Image.Exif()
        for tag, value in exif.items():
            if tag in (0x9003, 0x9004):  # DateTimeOriginal/Digitized live in the Exif IFD
                data.get_ifd(0x8769)[tag] = value
            else:
                data[tag] = value
        kwargs["exif"] = data
    image.save(out, fmt, **kwargs)
    return out.getvalue()


MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}

TAKEN_AT = datetime(2021, 7, 14, 9, 30, 5)


@dataclass(frozen=True)
class Expected:
    """What importing the sample folder must produce."""

    images: dict[str, tuple[int, int, str]]  # path -> (width, height, format), first name wins
    duplicates: set[str]  # paths whose bytes equal an earlier image's
    skipped: set[str]  # not images
    failed: set[str]  # corrupt or oversized
    oversized_bytes: int  # run the sample with max_file_size_bytes below this


def sample_folder(oversized_bytes: int = 3 * 1024 * 1024) -> tuple[FakeFolder, Expected]:
    """Nested images, a duplicate, non-images, a corrupt and an oversized file, hostile names."""
    red = make_image(
        640,
        480,
        "JPEG",
        seed=1,
        exif={0x010F: "Canon", 0x0110: "EOS 5D", 0x9003: TAKEN_AT.strftime("%Y:%m:%d %H:%M:%S")},
    )
    long_name = "l" * 200 + ".png"
    files: list[FakeFile | FakeFolder] = [
        FakeFile("red.jpg", red, "image/jpeg"),
        FakeFile("blue.png", make_image(300, 200, "PNG", seed=2), "image/png"),
        FakeFile("green.webp", make_image(128, 256, "WEBP", seed=3), "image/webp"),
        FakeFile("copy of red.jpg", red, "image/jpeg"),
        FakeFile("notes.txt", b"just some text\n" * 20, "text/plain"),
        FakeFile("not-really.jpg", b"<html>this is not a picture</html>", "image/jpeg"),
        FakeFile("broken.jpg", red[: len(red) // 3], "image/jpeg"),
        FakeFile(
            "huge.jpg",
            make_image(64, 64, "JPEG", seed=9),
            "image/jpeg",
            size=oversized_bytes + 1024,
        ),
        FakeFile("../escape.jpg", make_image(50, 40, "JPEG", seed=4), "image/jpeg"),
        FakeFile("ünïcödé 写真.png", make_image(33, 44, "PNG", seed=5), "image/png"),
        FakeFile(long_name, make_image(20, 10, "PNG", seed=6), "image/png"),
        FakeFolder(
            "sub",
            [
                FakeFile("nested.gif", make_image(90, 60, "GIF", seed=7), "image/gif"),
                FakeFolder("deeper", [FakeFile("deep.jpg", make_image(800, 600, "JPEG", seed=8))]),
            ],
        ),
    ]
    root = FakeFolder("Holiday photos", files)
    expected = Expected(
        images={
            "red.jpg": (640, 480, "JPEG"),
            "blue.png": (300, 200, "PNG"),
            "green.webp": (128, 256, "WEBP"),
            "../escape.jpg": (50, 40, "JPEG"),
            "ünïcödé 写真.png": (33, 44, "PNG"),
            long_name: (20, 10, "PNG"),
            "sub/nested.gif": (90, 60, "GIF"),
            "sub/deeper/deep.jpg": (800, 600, "JPEG"),
        },
        duplicates={"copy of red.jpg"},
        skipped={"notes.txt", "not-really.jpg"},
        failed={"broken.jpg", "huge.jpg"},
        oversized_bytes=oversized_bytes,
    )
    return root, expected


def big_folder(count: int, seed: int = 0, name: str | None = None) -> FakeFolder:
    """`count` small distinct JPEGs in one folder (for pagination and load). Ids derive from
    the folder's name: give folders that live side by side different names."""
    base = make_image(32, 24, "JPEG", seed=seed)
    # A JPEG comment segment after SOI makes each file distinct without re-encoding.
    files: list[FakeFile | FakeFolder] = [
        FakeFile(
            f"img-{i:06d}.jpg",
            base[:2] + b"\xff\xfe" + (2 + 8).to_bytes(2, "big") + i.to_bytes(8, "big") + base[2:],
            "image/jpeg",
        )
        for i in range(count)
    ]
    return FakeFolder(name or f"big-{count}", files)


@dataclass(frozen=True)
class LeanFolder:
    """A folder for lean mode: images whose headers tell their metadata, and images whose
    headers are fine but whose pixels are cut short (found only by decoding them)."""

    folder: FakeFolder
    good: set[str]  # paths
    corrupt: set[str]


def lean_folder(name: str) -> LeanFolder:
    exif = {0x010F: "Canon", 0x0110: "EOS 5D", 0x9003: TAKEN_AT.strftime("%Y:%m:%d %H:%M:%S")}
    photo = make_image(640, 480, "JPEG", seed=61, exif=exif)
    drawing = make_image(300, 200, "PNG", seed=62, exif={0x010F: "Nikon", 0x0110: "D750"})
    good = [
        FakeFile("photo.jpg", photo, "image/jpeg"),
        FakeFile("drawing.png", drawing, "image/png"),
        FakeFile("wide.webp", make_image(500, 120, "WEBP", seed=63, exif=exif), "image/webp"),
        FakeFile("anim.gif", make_image(90, 60, "GIF", seed=64), "image/gif"),
    ]
    cut_jpeg = make_image(320, 240, "JPEG", seed=65)
    cut_png = make_image(320, 240, "PNG", seed=66)
    corrupt = [
        # The headers whole, the pixel data cut off after about half of it.
        FakeFile("cut.jpg", cut_jpeg[: len(cut_jpeg) // 2], "image/jpeg"),
        FakeFile("cut.png", cut_png[: len(cut_png) // 2], "image/png"),
    ]
    return LeanFolder(
        FakeFolder(name, [*good, *corrupt]),
        {file.name for file in good},
        {file.name for file in corrupt},
    )
