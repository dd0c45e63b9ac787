"""Hostile file contents and names, built in memory."""

from __future__ import annotations

import io
import struct
import unicodedata
import zipfile
import zlib

from PIL import Image

from tests.fakes.folder import FakeFile, FakeFolder, make_image

MiB = 1024 * 1024


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int = 12_000, height: int = 12_000) -> bytes:
    """A valid 1-bit PNG of `width` x `height` zeros: a few kB that decode to 100+ MB.
    Between Pillow's own warning (89 M pixels) and its error (179 M), so only our
    MAX_IMAGE_PIXELS check stands between it and a full decode."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims a huge size."""
    data = bytearray(make_image(16, 16, "JPEG", seed=77))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def animated(fmt: str, seed: int) -> bytes:
    frames = [Image.new("RGB", (48, 32), (seed * 7 % 256, i * 20, 90)) for i in range(12)]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=40, loop=0)
    return out.getvalue()


def image(seed: int, fmt: str = "JPEG") -> bytes:
    return make_image(24 + seed % 7, 16 + seed % 5, fmt, seed=1000 + seed)


CAFE_NFC = unicodedata.normalize("NFC", "café.jpg")
CAFE_NFD = unicodedata.normalize("NFD", "café.jpg")
assert CAFE_NFC != CAFE_NFD

# Names a stranger can give files; each holds a distinct image, so each must become exactly
# one stored image whose key knows nothing of the name.
HOSTILE_NAMES = [
    "../../../../etc/passwd.jpg",
    "..\\..\\windows\\win.ini.jpg",
    "images/../../outside.jpg",
    "%2e%2e%2fencoded.jpg",
    "nul\x00byte.jpg",
    "ctrl\x1b[31mred\x1b[0m\r\n\x07bell.jpg",
    "c1\x9b31mcsi\x85nel.jpg",
    "rtl\u202egpj.exe.jpg",
    "x" * 996 + ".jpg",
    CAFE_NFC,
    CAFE_NFD,
    "\ufb01-ligature-and-\uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48.jpg",
]
# Drive allows "/" in a name (Dropbox does not: there it separates folders).
DRIVE_ONLY_NAMES = ["/absolute/path.jpg", "/"]


def hostile_names(provider: str) -> list[str]:
    return HOSTILE_NAMES + (DRIVE_ONLY_NAMES if provider == "gdrive" else [])


def hostile_folder(provider: str, oversized: int) -> tuple[FakeFolder, dict[str, str]]:
    """(folder, expected state per path). `oversized` is the size of the too-large file."""
    red = make_image(120, 80, "JPEG", seed=3)
    content: list[tuple[str, bytes, str, int | None, str]] = [
        ("good.jpg", red, "image/jpeg", None, "done"),
        ("png-named.jpg", image(1, "PNG"), "image/jpeg", None, "done"),
        ("jpeg-named.gif", image(2, "JPEG"), "image/gif", None, "done"),
        ("no-extension", image(3, "WEBP"), "application/octet-stream", None, "done"),
        ("notes.jpg", b"just some text, not a picture\n" * 40, "image/jpeg", None, "skipped"),
        ("page.png", b"<!DOCTYPE html><html><body>hi</body></html>", "image/png", None, "skipped"),
        ("vector.png", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/png", None, "skipped"),
        ("empty.jpg", b"", "image/jpeg", None, "skipped"),
        ("truncated.jpg", red[: len(red) // 2], "image/jpeg", None, "failed"),
        ("truncated.png", image(4, "PNG")[:60], "image/png", None, "failed"),
        ("garbage.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "image/png", None, "skipped"),
        ("bomb.png", png_bomb(), "image/png", None, "failed"),
        ("bomb.jpg", jpeg_claiming(12_000, 12_000), "image/jpeg", None, "failed"),
        ("animated.gif", animated("GIF", 1), "image/gif", None, "done"),
        ("animated.webp", animated("WEBP", 2), "image/webp", None, "done"),
        ("animated.png", animated("PNG", 3), "image/png", None, "done"),
        ("huge.jpg", red, "image/jpeg", oversized, "failed"),
    ]
    children: list[FakeFile | FakeFolder] = [
        FakeFile(name, data, mime, size=size) for name, data, mime, size, _ in content
    ]
    expected = {name: state for name, _, _, _, state in content}
    for number, name in enumerate(hostile_names(provider)):
        children.append(FakeFile(name, image(100 + number), "image/jpeg"))
        expected[name] = "done"
    # A long name inside a long-named folder: a path of 1,200+ characters.
    deep_name = "z" * 996 + ".png"
    children.append(FakeFolder("y" * 250, [FakeFile(deep_name, image(99, "PNG"), "image/png")]))
    expected[deep_name] = "done"
    return FakeFolder("Hostile", children), expected


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def zip_bomb(
    method: int,
    unpacked: int,
    *,
    declared: int = 1000,
    name: str = "Archive/bomb.png",
    others: dict[str, bytes] | None = None,
) -> bytes:
    """A ZIP whose entry `name`, compressed with `method`, unpacks to `unpacked` bytes (a PNG
    signature, then zeros) while both its headers declare `declared` bytes, with the CRC of
    those: every check of the headers passes, only the decompressor sees the truth."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for other, data in (others or {}).items():
            archive.writestr(other, data)
        info = zipfile.ZipInfo(name, (2024, 5, 1, 12, 0, 0))
        info.compress_type = method
        with archive.open(info, "w") as entry:  # streamed: never whole in memory
            entry.write(PNG_SIGNATURE)
            block = bytes(MiB)
            for _ in range((unpacked - len(PNG_SIGNATURE)) // MiB):
                entry.write(block)
            entry.write(bytes((unpacked - len(PNG_SIGNATURE)) % MiB))
        local = info.header_offset
    data = bytearray(out.getvalue())
    crc = zlib.crc32(PNG_SIGNATURE + bytes(declared - len(PNG_SIGNATURE)))
    struct.pack_into("<I", data, local + 14, crc)  # local header: CRC, sizes at 18, 22
    struct.pack_into("<I", data, local + 22, declared)
    central = data.find(b"PK\x01\x02")
    while central >= 0:  # central directory entries: CRC at 16, sizes at 20, 24, name at 46
        length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46 : central + 46 + length] == name.encode():
            struct.pack_into("<I", data, central + 16, crc)
            struct.pack_into("<I", data, central + 24, declared)
        central = data.find(b"PK\x01\x02", central + 4)
    return bytes(data)
