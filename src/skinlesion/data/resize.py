"""Pre-resizing: decode each source image once, save it small, in parallel.

Real ISIC photos reach 6,000×4,000 px; decoding them every epoch is the
bottleneck (the ISIC 2020 winners pre-resized everything once to 512–1,024 px).
:func:`resize_images` decodes each image once — large JPEGs at a reduced DCT
scale — applies the EXIF orientation, converts to RGB, resizes the shorter side
to ``size`` (never upscaling) and saves a JPEG. Work is spread over processes;
each output is written atomically (temp file + rename), so an interrupted run
leaves only complete files, and a re-run skips images already done.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from skinlesion.data.images import MAX_PIXELS, ImageError, open_image, resize_shorter_side
from skinlesion.utils.atomic import atomic_path
from skinlesion.utils.progress import Progress, Tally

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 512
DEFAULT_QUALITY = 95



@dataclass(frozen=True)
class ResizeTask:
    """One image to prepare.

    Attributes:
        src: Source file.
        dst: Output JPEG.
        size: Target shorter side in pixels.
        quality: JPEG quality.
        max_pixels: Decompression-bomb limit.
        draft: Use reduced-DCT decoding for JPEGs.
        overwrite: Prepare again even if ``dst`` exists (settings changed).
    """

    src: str
    dst: str
    size: int = DEFAULT_SIZE
    quality: int = DEFAULT_QUALITY
    max_pixels: int = MAX_PIXELS
    draft: bool = True
    overwrite: bool = False


@dataclass(frozen=True)
class ResizeResult:
    """Outcome of one :class:`ResizeTask`.

    Attributes:
        ok: Whether ``dst`` now holds the prepared image.
        width: Width of the prepared image (0 on failure).
        height: Height of the prepared image (0 on failure).
        skipped: True when ``dst`` already existed and was kept (re-run).
        reason: Why the image failed (``None`` when ``ok``).
    """

    ok: bool
    width: int = 0
    height: int = 0
    skipped: bool = False
    reason: str | None = None


def load_resized(source: str | os.PathLike[str] | bytes, size: int, *, draft: bool = True,
                 max_pixels: int = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Decode ``source`` (reduced-DCT for JPEG when ``draft``) and resize its shorter side.

    Raises:
        ImageError: if the image cannot be used.
    """
    img = open_image(source, name=name, max_pixels=max_pixels,
                     draft_size=size if draft else None)
    return resize_shorter_side(img, size)


def resize_one(task: ResizeTask) -> ResizeResult:
    """Prepare one image; never raises (one bad file never stops a batch)."""
    dst = Path(task.dst)
    if dst.is_file() and not task.overwrite:
        try:
            with Image.open(dst) as done:
                return ResizeResult(True, done.width, done.height, skipped=True)
        except (OSError, ValueError, SyntaxError):
            logger.warning("%s: existing output unreadable, preparing it again", dst)
    try:
        img = load_resized(task.src, task.size, draft=task.draft, max_pixels=task.max_pixels)
        with atomic_path(dst) as tmp:
            # No EXIF copied: the orientation is already applied to the pixels.
            img.save(tmp, format="JPEG", quality=task.quality)
        return ResizeResult(True, img.width, img.height)
    except ImageError as exc:
        return ResizeResult(False, reason=exc.reason)
    except Exception as exc:  # a decoder bug must not stop thousands of other images
        logger.exception("%s: unexpected error", task.src)
        return ResizeResult(False, reason=f"unexpected error ({type(exc).__name__}: {exc})")


def default_workers() -> int:
    """CPU cores this process may use (all of them by default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resize_images(tasks: Sequence[ResizeTask], workers: int | None = None,
                  progress: Progress | None = None) -> list[ResizeResult]:
    """Run :func:`resize_one` over ``tasks`` on ``workers`` processes.

    Args:
        tasks: Images to prepare.
        workers: Processes (default: every available core); 1 runs in this process.
        progress: Gets the image count (task ``"resizing"``), in this process, after each
            image.

    Returns:
        Results in the order of ``tasks``.
    """
    workers = default_workers() if workers is None else max(1, workers)
    total = len(tasks)
    results: list[ResizeResult | None] = [None] * total
    tally = Tally(progress, "resizing", total)
    if workers == 1 or total <= 1:
        for i, task in enumerate(tasks):
            results[i] = resize_one(task)
            tally.add(1)
        tally.close()
        return [r for r in results if r is not None]
    # "spawn", not fork: the caller may run threads (a progress bar), and forking a
    # threaded process can deadlock the child.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=ctx) as pool:
        futures: dict[Future[ResizeResult], int] = {
            pool.submit(resize_one, task): i for i, task in enumerate(tasks)}
        try:
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except Exception as exc:  # a worker process died (out of memory, killed)
                    results[i] = ResizeResult(False, reason=f"worker failed ({type(exc).__name__}: "
                                                            f"{exc})")
                tally.add(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    tally.close()
    return [r if r is not None else ResizeResult(False, reason="not processed") for r in results]
