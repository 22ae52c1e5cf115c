"""The compare command's figures: zoomed crops of the noisy input, each model's output and the clean image, side by
side and labelled with each PSNR (OpenCV drawing)."""
import re

import cv2
import numpy as np


def pick_crop(gt_img, size):
    """(y, x, size) of the window with the most fine detail (mean |Laplacian| of the clean image, coarse grid):
    where denoisers differ most, rather than a flat area or a single strong edge."""
    h, w = gt_img.shape[:2]
    size = min(size, h, w)
    gray = gt_img.astype(np.float32) if gt_img.ndim == 2 else gt_img.astype(np.float32).mean(axis=2)
    detail = np.abs(cv2.Laplacian(gray, cv2.CV_32F))
    step = max(size // 4, 1)
    y, x = max(((y, x) for y in range(0, h - size + 1, step) for x in range(0, w - size + 1, step)),
               key=lambda yx: float(detail[yx[0]:yx[0] + size, yx[1]:yx[1] + size].mean()))  # ties: the first
    return y, x, size


FONT = dict(fontFace=0, fontScale=0.45, thickness=1)  # cv2.FONT_HERSHEY_SIMPLEX, size of the figure labels
LINE_H, MARGIN = 18, 3  # label line height and left margin (px)


def text_width(text):
    return cv2.getTextSize(text, **FONT)[0][0]


def label_lines(name, psnr, width):
    """The label of one figure panel: the PSNR on its own line, so a long name can never hide it, and the name cut
    to fit ``width`` px (ending '..'; Hershey fonts have no ellipsis glyph)."""
    if text_width(name) + 2 * MARGIN > width:
        while len(name) > 1 and text_width(name + '..') + 2 * MARGIN > width:
            name = name[:-1]
        name += '..'
    return [name] if psnr is None else [name, f'{psnr:.2f} dB']


def figure_name(set_name, sigma, stem):
    """``<set>_sigma<s>_<image>.png`` with anything but letters, digits, '.', '_', '-' replaced by '_': a set name
    such as 'my/set' would otherwise be a path into a missing folder."""
    return re.sub(r'[^A-Za-z0-9._-]', '_', f'{set_name}_sigma{sigma:g}_{stem}') + '.png'


def save_figure(path, panels, crop, zoom):
    """``panels``: list of (name, PSNR or None, uint8 image HxW or HxWx3 BGR). Writes one PNG row of zoomed crops,
    each under a two-line label (name, PSNR); a panel is widened to show the whole PSNR when the crop is narrower.
    Returns whether the file was written."""
    y, x, size = crop
    tiles = []
    for name, psnr, img in panels:
        tile = img[y:y + size, x:x + size]
        if tile.ndim == 2:
            tile = cv2.cvtColor(tile, cv2.COLOR_GRAY2BGR)
        tile = cv2.resize(tile, (tile.shape[1] * zoom, tile.shape[0] * zoom), interpolation=cv2.INTER_NEAREST)
        width = max(tile.shape[1], text_width('000.00 dB') + 2 * MARGIN)
        lines = label_lines(name, psnr, width)
        panel = np.full((2 * LINE_H + 4 + tile.shape[0], width, 3), 255, np.uint8)
        for i, line in enumerate(lines):
            cv2.putText(panel, line, (MARGIN, LINE_H * (i + 1) - 4), color=(0, 0, 0), lineType=cv2.LINE_AA, **FONT)
        panel[2 * LINE_H + 4:, :tile.shape[1]] = tile
        tiles.append(panel)
        tiles.append(np.full((panel.shape[0], 4, 3), 255, np.uint8))
    # cv2.imwrite reports a failure (missing folder, unwritable file) only by returning False
    return cv2.imwrite(path, np.concatenate(tiles[:-1], axis=1))
