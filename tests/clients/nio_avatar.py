"""matrix-nio sets an avatar on kith: uploads a PNG (made here, no image library needed),
sets it as avatar, reads the profile back, downloads it and asks for a thumbnail.

Usage: nio_avatar.py BASE_URL   (open registration)
Prints "nio avatar test passed" and exits 0; otherwise says what failed and exits 1."""

import asyncio
import io
import secrets
import struct
import sys
import zlib

from nio import (
    AsyncClient,
    DownloadError,
    ProfileGetAvatarResponse,
    ProfileSetAvatarResponse,
    RegisterResponse,
    ThumbnailResponse,
    UploadResponse,
)
from nio.api import ResizingMethod

PASSWORD = "a password for nio avatars"


def png(width, height):
    """A real RGB PNG: signature, IHDR, one IDAT, IEND."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 3 % 256, y * 5 % 256, 120))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def png_size(data):
    if not data.startswith(b"\x89PNG"):
        return None
    return struct.unpack(">II", data[16:24])


def fail(message):
    print(f"FAILED: {message}")
    sys.exit(1)


async def main(base):
    user = f"avatar-{secrets.token_hex(4)}"
    client = AsyncClient(base, user)
    try:
        registered = await asyncio.wait_for(client.register(user, PASSWORD), 20)
        if not isinstance(registered, RegisterResponse):
            fail(f"register: {registered}")
        picture = png(80, 60)
        uploaded, _ = await asyncio.wait_for(
            client.upload(io.BytesIO(picture), content_type="image/png", filename="me.png", filesize=len(picture)),
            20,
        )
        if not isinstance(uploaded, UploadResponse):
            fail(f"upload: {uploaded}")
        mxc = uploaded.content_uri
        print(f"uploaded {len(picture)} bytes as {mxc}")

        result = await asyncio.wait_for(client.set_avatar(mxc), 20)
        if not isinstance(result, ProfileSetAvatarResponse):
            fail(f"set_avatar: {result}")
        avatar = await asyncio.wait_for(client.get_avatar(), 20)
        if not isinstance(avatar, ProfileGetAvatarResponse) or avatar.avatar_url != mxc:
            fail(f"get_avatar: {avatar}")

        downloaded = await asyncio.wait_for(client.download(mxc=mxc), 20)
        if isinstance(downloaded, DownloadError) or downloaded.body != picture:
            fail(f"download: {downloaded}")
        if downloaded.content_type != "image/png":
            fail(f"download content type {downloaded.content_type}")
        print(f"downloaded {len(downloaded.body)} identical bytes, named {downloaded.filename}")

        server, media_id = mxc[len("mxc://"):].split("/", 1)
        thumb = await asyncio.wait_for(client.thumbnail(server, media_id, 32, 32, ResizingMethod.crop), 20)
        if not isinstance(thumb, ThumbnailResponse):
            fail(f"thumbnail: {thumb}")
        size = png_size(thumb.body)
        if size != (32, 32):
            fail(f"thumbnail is {size}, expected a 32x32 PNG ({thumb.content_type})")
        print(f"thumbnail {size[0]}x{size[1]} {thumb.content_type}")
        print("nio avatar test passed")
    finally:
        await client.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), 120))
