"""Encoded images (PNG, JPEG, ...) decoded into a fixed-shape float32 tensor column, for ``mmbal data import``.

Hugging Face ``datasets`` stores an ``Image`` feature as ``struct<bytes: binary, path: string>``;
other tools store the bytes in a plain binary column. Decoding needs Pillow, an optional extra
(``pip install "mmbal[image]"``), imported only here and only when a column is decoded.

Every image becomes ``[H, W]`` (all grayscale) or ``[3, H, W]`` (any colour image; grayscale ones are
then converted to RGB), with the pixel values as floats (0..255 for 8-bit images; standardisation
happens in training). All images must have one size, unless ``size`` resizes them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UsageError
from .tensors import Where

GRAY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "F", "LA"}


def is_image_type(tp: pa.DataType) -> bool:
    """``struct<bytes: binary, ...>`` (Hugging Face's ``Image`` feature) or a plain binary column."""
    if pa.types.is_struct(tp):
        idx = tp.get_field_index("bytes")
        return idx >= 0 and _is_binary(tp.field(idx).type)
    return _is_binary(tp)


def _is_binary(tp: pa.DataType) -> bool:
    return pa.types.is_binary(tp) or pa.types.is_large_binary(tp) or pa.types.is_binary_view(tp)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise UsageError('decoding image columns needs Pillow, an optional extra: pip install "mmbal[image]" '
                         '(or leave the image columns out with --modality)') from None
    return Image


def decode_images(column: pa.ChunkedArray | pa.Array, where: Where,
                  size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(values (N, H, W) or (N, 3, H, W) float32, present (N,) bool)``; ``size`` = (H, W) resizes."""
    image_module = _pillow()
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    data, paths = _bytes_and_paths(arr)
    n = len(arr)
    present = np.array([b is not None or p is not None for b, p in zip(data, paths)], bool)
    rows = [int(i) for i in np.flatnonzero(present)]
    # a first pass reads the headers only (mode and size), so that one target shape is known up front
    headers = [_open(image_module, data[i], paths[i], where, i, load=False) for i in rows]
    colour = any(img.mode not in GRAY_MODES for img in headers)
    target = size or (headers[0].size[::-1] if headers else (1, 1))
    del headers
    out = np.zeros((n, *((3,) if colour else ()), *target), np.float32)
    for row in rows:
        img = _open(image_module, data[row], paths[row], where, row, load=True)
        out[row] = _pixels(image_module, img, colour, target, size is not None, where, row)
    return out, present


def _bytes_and_paths(arr: pa.Array) -> tuple[list, list]:
    if pa.types.is_struct(arr.type):
        valid = pc.is_valid(arr).to_pylist()
        data = arr.field("bytes").to_pylist()
        has_path = arr.type.get_field_index("path") >= 0
        paths = arr.field("path").to_pylist() if has_path else [None] * len(arr)
        return ([d if v else None for d, v in zip(data, valid)], [p if v else None for p, v in zip(paths, valid)])
    return arr.to_pylist(), [None] * len(arr)


def _open(image_module, data: bytes | None, path: str | None, where: Where, row: int, load: bool):
    source = io.BytesIO(data) if data is not None else _image_path(path, where, row)
    try:
        img = image_module.open(source)
        if load:
            img.load()
    except (OSError, ValueError, SyntaxError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise where.error(f"cannot be decoded as an image ({exc})", row) from None
    return img


def _image_path(path: str, where: Where, row: int) -> Path:
    """An image stored by path only: absolute, or relative to the Parquet file's folder."""
    p = Path(path)
    candidate = p if p.is_absolute() else where.file.parent / p
    if not candidate.is_file():
        raise where.error(f"holds no image bytes, only the path '{path}', which does not exist (looked for "
                          f"{candidate}); store the images' bytes in the file (datasets: embed_external_files)", row)
    return candidate


def _pixels(image_module, img, colour: bool, target: tuple[int, int], resize: bool, where: Where,
            row: int) -> np.ndarray:
    if (img.size[1], img.size[0]) != tuple(target):
        if not resize:
            raise where.error(f"the image is {img.size[1]}x{img.size[0]} (height x width) where the first image is "
                              f"{target[0]}x{target[1]}; a modality needs one shape, so resize them all with "
                              f"--image-size HxW", row)
        img = img.resize((target[1], target[0]), image_module.Resampling.BILINEAR)
    if colour:
        return np.asarray(img.convert("RGB"), np.float32).transpose(2, 0, 1)
    if img.mode in ("LA", "1"):
        img = img.convert("L")
    return np.asarray(img, np.float32)
