"""The user's images for ``pixel-lightning evaluate`` and ``complete``: one owner of what an image file means.

A model reads integer images (C, H, W) with values in [0, levels): C = 1 (grey) or 3 (RGB). The user hands
us a folder of PNG files, one PNG file, an ``.npz`` of integer arrays, or a mask PNG. This module reads
them and converts only where the conversion is exact and unsurprising:

- every PNG mode Pillow reads: bilevel, grey at 1..16 bits, palette, RGB, with or without alpha;
- values are the model's levels spread evenly over the file's range (0..255, or 0..65535 at 16 bits):
  level k is stored as round(k * max / (levels - 1)); 16-bit files are scaled exactly or refused, never
  clipped (Pillow reads 16-bit *colour* PNGs only to 8 bits, so those are refused);
- alpha is dropped only when every pixel is fully opaque;
- an RGB file whose three channels are equal everywhere is the grey image it shows; colour on a grey
  model, or grey on an RGB model, is refused.

Everything else raises :class:`~pixel_lightning.errors.InputError` (exit 2) naming the file, what it is
(format, mode, bit depth, size), what the model expects, and the fix.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from pixel_lightning.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PASS = "pass a folder of PNG images, one PNG file, or an .npz of integer images"
COLOR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}  # PNG IHDR colour types


def expects(shape: tuple[int, int, int], levels: int) -> str:
    """What a model of ``shape`` and ``levels`` reads, in words."""
    C, H, W = shape
    kind = "grey" if C == 1 else "RGB"
    values = "black and white (0 and 255) pixels" if levels == 2 else f"{levels} levels per channel"
    return f"this model reads {kind} {W}x{H} images with {values}"


# ----------------------------------------------------------------------------- PNG files


def png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None when the file does not start as a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    depth, color_type = struct.unpack(">BB", head[24:26])
    return depth, color_type


def open_png(path: Path):
    """The decoded PIL image of ``path`` and its description ("a 16-bit grey PNG (mode I;16), 8x8")."""
    from PIL import Image

    try:
        header = png_header(path)
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a damaged file
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        raise InputError(
            f"{path} is not a readable PNG image ({why})",
            "check that the file is complete and really a PNG; save it again as PNG",
        ) from e
    if im.format != "PNG" or header is None:
        raise InputError(
            f"{path} is a {im.format or 'non-PNG'} file, not a PNG",
            "save it as PNG (lossless), e.g. PIL.Image.open(f).save('x.png')",
        )
    depth, color_type = header
    kind = COLOR_TYPES.get(color_type, "unknown")
    about = f"{'an' if depth == 8 else 'a'} {depth}-bit {kind} PNG (mode {im.mode}), {im.width}x{im.height}"
    return im, depth, color_type, about


def png_values(path: Path) -> tuple[np.ndarray, int, str]:
    """A PNG's pixels exactly as stored: int64 (H, W) grey or (H, W, 3) colour, the largest value the
    file can hold (255 or 65535), and its description. Refuses transparency and 16-bit colour."""
    im, depth, color_type, about = open_png(path)
    if depth == 16 and color_type in (2, 4, 6):
        raise InputError(
            f"{path} is {about}: Pillow reads 16-bit colour PNGs only to 8 bits, so its values cannot be "
            "read exactly",
            "save it with 8 bits per channel",
        )
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey (Pillow keeps every bit)
        v = np.asarray(im).astype(np.int64)
        vmax = 65535 if depth == 16 else 255
        key = im.info.get("transparency")
        alpha = None if key is None else np.where(v == key, 0, 255)
    else:
        has_key = "transparency" in im.info
        if im.mode == "1":
            im = im.convert("L")  # exact: 0 and 255
        elif im.mode == "P":
            im = im.convert("RGBA" if has_key or "A" in im.palette.mode else "RGB")  # palette lookup: exact
        elif im.mode in ("L", "RGB") and has_key:
            im = im.convert("LA" if im.mode == "L" else "RGBA")  # the transparent colour as alpha
        if im.mode not in ("L", "LA", "RGB", "RGBA"):
            raise InputError(
                f"{path} is {about}: a PNG mode this command does not read",
                "save it as an 8-bit grey or RGB PNG",
            )
        v = np.asarray(im).astype(np.int64)
        vmax = 255
        alpha = None
        if im.mode in ("LA", "RGBA"):
            v, alpha = v[..., :-1], v[..., -1]
            v = v[..., 0] if im.mode == "LA" else v
    if alpha is not None and (alpha != 255).any():  # alpha (H, W), 255 = opaque
        raise InputError(
            f"{path} is {about} with transparency ({int((alpha != 255).sum())} of {alpha.size} pixels not "
            "fully opaque): what a transparent pixel shows is not defined",
            "flatten it onto a background and save it without alpha (e.g. Image.convert('RGB'))",
        )
    return v, vmax, about


def read_png(path: Path, shape: tuple[int, int, int], levels: int) -> np.ndarray:
    """One PNG -> int64 (C, H, W) in [0, levels), exactly as stored, or an InputError saying why not."""
    C, H, W = shape
    v, vmax, about = png_values(path)
    if v.ndim == 3 and C == 1:
        differs = np.argwhere((v != v[..., :1]).any(-1))
        if len(differs):
            r, c = differs[0]
            fix = (
                "binarize it to black and white" if levels == 2 else "convert it to grey (Image.convert('L'))"
            )
            raise InputError(
                f"{path} is {about} in colour (pixel at row {r}, column {c} is {tuple(v[r, c].tolist())}); "
                f"{expects(shape, levels)}",
                f"pass grey images: {fix} and save it again",
            )
        v = v[..., 0]  # an RGB file showing a grey image: its channels are equal, so this is exact
    if v.ndim == 2 and C == 3:
        raise InputError(
            f"{path} is {about}, a grey image; {expects(shape, levels)}",
            "pass RGB images; if the grey picture is what you want, convert it (Image.convert('RGB'))",
        )
    v = v[None] if v.ndim == 2 else v.transpose(2, 0, 1)  # (C, H, W)
    if v.shape[1:] != (H, W):
        raise InputError(
            f"{path} is {about}; {expects(shape, levels)}",
            f"resize or crop it to {W}x{H} pixels first",
        )
    return to_levels(v, vmax, levels, f"{path} is {about}")


def to_levels(v: np.ndarray, vmax: int, levels: int, what: str) -> np.ndarray:
    """Stored values in 0..vmax -> levels in [0, levels), exactly: level k is stored as
    round(k * vmax / (levels - 1)); any other value is refused (integer arithmetic, no float rounding)."""
    top = levels - 1
    x = (2 * v * top + vmax) // (2 * vmax)  # round(v * top / vmax), halves up
    back = (2 * x * vmax + top) // (2 * top)  # round(x * vmax / top)
    bad = np.argwhere(back != v)
    if len(bad):
        where = tuple(bad[0].tolist())
        allowed = ", ".join(str(int(b)) for b in ((2 * np.arange(min(levels, 4)) * vmax + top) // (2 * top)))
        fix = (
            f"binarize it first (value > {vmax // 2} -> {vmax}, else 0)"
            if levels == 2
            else f"quantize it to {levels} levels first"
        )
        raise InputError(
            f"{what}: value {int(v[where])} at (channel, row, column) {where} is not one of the model's "
            f"{levels} levels spread over 0..{vmax} ({allowed}, ...)",
            fix,
        )
    return x


# ----------------------------------------------------------------------------- npz arrays


def read_npz(path: Path, shape: tuple[int, int, int], levels: int) -> np.ndarray:
    """The integer images of an ``.npz``: its ``images`` array (or its only array), (N, C, H, W), or
    (N, H, W) for one channel. Values are checked by the model (``check_images``)."""
    C, H, W = shape
    try:
        with np.load(path, allow_pickle=False) as data:
            key = "images" if "images" in data.files else (data.files[0] if len(data.files) == 1 else None)
            if key is None:
                raise InputError(
                    f"{path} holds arrays {data.files}",
                    "name the images array 'images': np.savez(f, images=x)",
                )
            x = data[key]
    except InputError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError) as e:
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        raise InputError(
            f"{path} is not a readable .npz file ({why})",
            "check that it is complete; write it with np.savez(path, images=x), x integer (N, C, H, W)",
        ) from e
    if x.ndim == 3 and C == 1:
        x = x[:, None]
    if x.ndim == 4 and x.shape[1:] != shape and x.shape[1:] == (H, W, C):
        raise InputError(
            f"{path}: images are (N, H, W, C) = {x.shape}; {expects(shape, levels)} as (N, C, H, W)",
            "transpose them first: x.transpose(0, 3, 1, 2)",
        )
    if x.ndim != 4 or x.shape[1:] != shape:
        raise InputError(
            f"{path}: images have shape {x.shape}; {expects(shape, levels)}: (N, {C}, {H}, {W})",
            "save images of the model's size",
        )
    if not np.issubdtype(x.dtype, np.integer):
        raise InputError(
            f"{path}: images must be integers in [0, {levels}), got dtype {x.dtype}",
            "convert with np.rint(x).astype(np.int64) if they are whole numbers",
        )
    return x


# ----------------------------------------------------------------------------- any of them


def read_images(path: str | Path, shape: tuple[int, int, int], levels: int):
    """(names, int64 images (N, C, H, W)) from a folder of PNG files (sorted by name), one PNG file or an
    ``.npz``. Shapes and values are then checked as ``log_prob`` checks them (:func:`check`)."""
    import torch

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file())
        if not files:
            raise InputError(f"no .png files in {path}", PASS)
        names = [f.name for f in files]
        x = np.stack([read_png(f, shape, levels) for f in files])
    elif path.is_file() and path.suffix.lower() == ".png":
        names, x = [path.name], read_png(path, shape, levels)[None]
    elif path.is_file() and path.suffix.lower() == ".npz":
        x = read_npz(path, shape, levels)
        names = [f"{path.name}:{k}" for k in range(len(x))]
    elif path.is_file():
        raise InputError(f"{path} is neither a .png nor an .npz file", PASS)
    else:
        raise InputError(f"no file or folder at {path}", PASS)
    if len(x) == 0:
        raise InputError(f"{path} holds no images", "pass at least one image")
    return names, torch.from_numpy(np.ascontiguousarray(x)).long()


def check(model, x, source: str | Path) -> None:
    """``log_prob``'s shape/dtype/levels check, naming the file."""
    try:
        model.check_images(x)
    except ValueError as e:
        raise InputError(f"{source}: {e}") from None


def read_mask(path: str | Path, shape: tuple[int, int, int]):
    """A mask PNG -> bool (C, H, W), True where the input is kept: black and white only (white = keep),
    the model's size; grey values between, colour and transparency are refused."""
    import torch

    C, H, W = shape
    path = Path(path)
    v, vmax, about = png_values(path)
    if v.ndim == 3:
        if (v != v[..., :1]).any():
            raise InputError(f"mask {path} is {about} in colour", "draw the mask in black and white only")
        v = v[..., 0]
    if v.shape != (H, W):
        raise InputError(
            f"mask {path} is {v.shape[1]}x{v.shape[0]} pixels, the model's images {W}x{H}",
            f"draw the mask at {W}x{H}",
        )
    keep = to_levels(v[None], vmax, 2, f"mask {path} is {about}")[0].astype(bool)  # (H, W)
    return torch.from_numpy(keep)[None].expand(C, H, W).clone()
