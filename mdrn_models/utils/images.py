"""What one input image may cost, judged from its header before any pixel is decoded (docs/robustness.md), and
writing an image so that a failure names the file and its cause."""
import contextlib
import errno
import os

MAX_PIXELS = 100_000_000  # 100 MP: a 10000x10000 image; camera photos (24-60 MP) and 8K frames (33 MP) pass
IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.ppm', '.webp')  # what a folder of images holds


def list_images(folder, error=ValueError):
    """Sorted image file names (``IMG_EXTENSIONS``, no directories) directly inside ``folder``; ``error`` (one line)
    when the folder is absent or holds none."""
    if not os.path.isdir(folder):
        raise error(f"input folder '{folder}' does not exist: check the path")
    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))
                   and os.path.splitext(n)[1].lower() in IMG_EXTENSIONS)
    if not names:
        raise error(f"no images ({', '.join(IMG_EXTENSIONS)}) in '{folder}': check the path")
    return names


@contextlib.contextmanager
def pil_unbounded():
    """PIL's ``Image`` with its own pixel limit off (its ``DecompressionBombError`` fires at 179 MP, worded as an
    attack): the bound is ours (:func:`too_large`), checked first."""
    from PIL import Image
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield Image
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def declared_size(path):
    """(height, width) that the image file ``path`` declares, read from its header (no pixels decoded), or None for
    a file PIL cannot read (OpenCV-only formats: OpenCV's own 1 GP bound applies to them)."""
    with pil_unbounded() as Image:
        try:
            with Image.open(path) as img:
                return img.size[::-1]
        except (OSError, SyntaxError, ValueError):
            return None


def too_large(path, max_pixels=MAX_PIXELS, raise_it='raise the bound'):
    """Why the image at ``path`` is larger than ``max_pixels``, ending in ``raise_it`` (how to raise the bound, in
    the caller's terms) and the alternative, or None."""
    size = declared_size(path)
    if size is None or size[0] * size[1] <= max_pixels:
        return None
    h, w = size
    return (f'{path} declares {w}x{h} pixels ({h * w / 1e6:.0f} MP), more than the {max_pixels / 1e6:g} MP one image '
            f'may have here (about {h * w * 16 / 2 ** 30:.0f} GB as a float colour tensor): {raise_it}')


def write_image(path, img, params=()):
    """``cv2.imwrite`` that creates the folder and raises an ``OSError`` naming ``path`` and the cause when the
    file cannot be written (OpenCV only returns False; BasicSR's ``imwrite`` then says "Failed in writing images").
    The file is written whole or not at all (a temporary name, then a rename)."""
    import cv2
    ext = os.path.splitext(path)[1] or '.png'
    ok, data = cv2.imencode(ext, img, list(params))
    if not ok:
        raise OSError(errno.EINVAL, f'OpenCV cannot encode a {ext} image', path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            f.write(data.tobytes())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OSError(exc.errno, exc.strerror, path) from None
