"""Field photos whose disease shows on the fruit, not the leaf: iBean's bean-leaf photos with a painted fruit
(issue 24's held-back field set has fruit and flower classes the cascade missed; issue 25's patches on symptoms).

    python -m benchmarks.fruit_scenes --out benchmarks/work/fruit_scenes/data

Five classes of 500-px photos: iBean's three leaf classes as they are (``--per-class`` photos each) and two fruit
classes, ``fruit_healthy`` and ``fruit_rot``, each an iBean photo of any of the three leaf classes (photos the leaf
classes do not use) with one strawberry-like fruit painted on it: a red berry with seeds and a small green calyx, and
for ``fruit_rot`` one to three dark sunken lesions on the berry. The fruit classes differ only on the fruit; their
leaves say nothing. The fruit's size (``--berry``), place and shading are drawn from a seeded stream, so the same seed gives the
same photos. Writes ``<out>/<class>/*.jpg``, ``<out>/fruit_boxes.csv`` (each fruit photo's berry box) and each
berry's mask in ``<out>_berry_masks/`` (for localisation).
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
IBEAN = REPO.parent / "shared" / "data" / "ibean" / "train"
LEAF_CLASSES = ("angular_leaf_spot", "bean_rust", "healthy")
FRUIT_CLASSES = ("fruit_healthy", "fruit_rot")
SIDE = 500  # iBean's photos' side
MULCH = ("straw", "plastic", "soil")


def _berry_mask(size: int, cx: float, cy: float, rx: float, ry: float, angle: float) -> np.ndarray:
    """A soft strawberry outline (an ellipse narrowed toward its tip) as float 0..1."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx  # across the berry
    v = (-(xx - cx) * s + (yy - cy) * c) / ry  # along it, +1 at the tip
    width = 1.0 - 0.35 * np.clip(v, 0, 1)  # narrower toward the tip
    inside = (u / width) ** 2 + v ** 2
    return np.clip((1.0 - inside) * 12.0, 0.0, 1.0)


def paint_fruit(photo: np.ndarray, rng: np.random.Generator, rot: bool,
                berry: tuple[float, float] = (0.09, 0.14)) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]:
    """``photo`` (HWC RGB uint8) with one berry painted on it (and lesions when ``rot``), its half-length a share of
    the side drawn from ``berry``; the berry's box and its pixels (bool)."""
    size = photo.shape[0]
    img = photo.astype(np.float32)
    ry = rng.uniform(*berry) * size
    rx = ry * rng.uniform(0.75, 0.9)
    margin = ry * 1.3
    cx, cy = rng.uniform(margin, size - margin, 2)
    angle = rng.uniform(-0.6, 0.6)
    mask = _berry_mask(size, cx, cy, rx, ry, angle)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    shade = 0.75 + 0.35 * np.clip(1 - ((xx - cx + 0.3 * rx) ** 2 + (yy - cy + 0.3 * ry) ** 2) / (1.5 * ry) ** 2, 0, 1)
    base = np.array([rng.uniform(175, 225), rng.uniform(20, 50), rng.uniform(30, 60)], np.float32)
    berry = base[None, None] * shade[..., None]
    berry += rng.normal(0, 6, berry.shape).astype(np.float32)
    for _ in range(int(rng.integers(25, 45))):  # seeds (achenes)
        sx, sy = cx + rng.uniform(-rx, rx), cy + rng.uniform(-ry, ry)
        cv2.circle(berry, (int(sx), int(sy)), max(1, int(size / 220)), (235, 205, 90), -1, cv2.LINE_AA)
    if rot:
        for _ in range(int(rng.integers(1, 4))):  # sunken anthracnose-like lesions: dark centre, brown ring
            r = rng.uniform(0.3, 0.55) * rx
            lx, ly = cx + rng.uniform(-0.5, 0.5) * rx, cy + rng.uniform(-0.5, 0.5) * ry
            cv2.circle(berry, (int(lx), int(ly)), int(r), (105, 60, 35), -1, cv2.LINE_AA)
            cv2.circle(berry, (int(lx), int(ly)), int(r * 0.65), (55, 30, 20), -1, cv2.LINE_AA)
    alpha = cv2.GaussianBlur(mask, (0, 0), 1.2)[..., None]
    img = img * (1 - alpha) + berry * alpha
    top = (cx - np.sin(angle) * -ry * 0.95, cy + np.cos(angle) * -ry * 0.95)  # the calyx at the berry's wide end
    for k in range(5):
        a = angle - np.pi / 2 + (k - 2) * 0.45
        end = (top[0] + np.cos(a) * rx * 0.7, top[1] + np.sin(a) * rx * 0.7)
        cv2.line(img, (int(top[0]), int(top[1])), (int(end[0]), int(end[1])), (50, 125, 40), max(2, int(size / 120)),
                 cv2.LINE_AA)
    ys, xs = np.nonzero(mask > 0.5)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return np.clip(img, 0, 255).astype(np.uint8), box, mask > 0.5


def mulch(rng: np.random.Generator, kind: str, side: int = SIDE) -> np.ndarray:
    """A ``side`` x ``side`` RGB background without a leaf: ``straw`` (tan stalks), ``plastic`` (black film with a
    sheen) or ``soil`` (brown, mottled)."""
    noise = cv2.GaussianBlur(rng.normal(0, 1, (side, side)).astype(np.float32), (0, 0), side / 60)
    noise /= noise.std() + 1e-6
    if kind == "plastic":
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
        sheen = 25 * np.exp(-((xx - rng.uniform()) ** 2 + (yy - rng.uniform()) ** 2) / 0.08)
        grey = 32 + sheen + 4 * noise
        img = np.stack([grey, grey, grey * 1.05], axis=-1)
    else:
        base = np.array([150, 120, 75] if kind == "straw" else [105, 75, 50], np.float32)
        img = base[None, None] * (1 + 0.12 * noise[..., None])
        img += rng.normal(0, 8, img.shape).astype(np.float32)
    if kind == "straw":
        for _ in range(700):
            x, y, a = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(0, np.pi)
            length = rng.uniform(0.05, 0.25) * side
            end = (int(x + np.cos(a) * length), int(y + np.sin(a) * length))
            colour = tuple(float(v) for v in np.array([215, 180, 110]) * rng.uniform(0.7, 1.1))
            cv2.line(img, (int(x), int(y)), end, colour, int(rng.integers(2, 5)), cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.uint8)


def masks_folder(out: Path) -> Path:
    """Where the berries' masks go: beside the photos' root, not in it (a folder there would be a class)."""
    return out.parent / f"{out.name}_berry_masks"


def source_pools(rng: np.random.Generator, per_class: int) -> tuple[dict[str, list[Path]], int]:
    """Each leaf class's iBean photos in the seeded order :func:`make_dataset` draws them, and how many of each it uses
    (``per_class`` as they are, the rest under painted fruit); photos past that count are in no dataset it made."""
    pools = {c: sorted((IBEAN / c).glob("*.jpg")) for c in LEAF_CLASSES}
    for c in pools:
        rng.shuffle(pools[c])
    return pools, per_class + (2 * per_class + 2) // 3


def make_dataset(out: Path, per_class: int, seed: int = 0, berry: tuple[float, float] = (0.09, 0.14),
                 masks_only: bool = False, mulch_every: int = 0) -> Path:
    """Write the five classes under ``out`` (see the module docstring) and each berry's mask under
    :func:`masks_folder` (``masks_only``: only the masks, the same draws, photos untouched); ``mulch_every`` n > 0
    paints every n-th fruit photo's berry on :func:`mulch` instead of its iBean photo (the same berry); returns
    ``out``."""
    rng = np.random.default_rng(seed)
    pools, need = source_pools(rng, per_class)
    if any(len(p) < need for p in pools.values()):
        raise SystemExit(f"iBean has too few photos for {per_class} a class under {IBEAN}")
    rows = []
    for c in LEAF_CLASSES if not masks_only else ():
        (out / c).mkdir(parents=True, exist_ok=True)
        for src in pools[c][:per_class]:
            (out / c / src.name).write_bytes(src.read_bytes())
    masks_folder(out).mkdir(parents=True, exist_ok=True)
    backgrounds = [p for i in range(need - per_class) for p in (pools[c][per_class + i] for c in LEAF_CLASSES)]
    for k, fruit in enumerate(FRUIT_CLASSES):
        (out / fruit).mkdir(parents=True, exist_ok=True)
        for i, src in enumerate(backgrounds[k::2][:per_class]):
            photo = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB)
            if mulch_every > 0 and i % mulch_every == mulch_every - 1:
                photo = mulch(np.random.default_rng(20_000 + 1_000 * k + i), MULCH[(i // mulch_every) % 3],
                              photo.shape[0])
            painted, box, mask = paint_fruit(photo, rng, rot=fruit == "fruit_rot", berry=berry)
            name = f"{fruit}_{i:04d}.jpg"
            cv2.imwrite(str(masks_folder(out) / f"{fruit}_{i:04d}.png"), mask.astype(np.uint8) * 255)
            if not masks_only:
                cv2.imwrite(str(out / fruit / name), cv2.cvtColor(painted, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 88])
            rows.append({"path": f"{fruit}/{name}", "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]})
    with open(out / "fruit_boxes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "x0", "y0", "x1", "y1"])
        writer.writeheader()
        writer.writerows(rows)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "work" / "fruit_scenes" / "data")
    parser.add_argument("--per-class", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--berry", type=float, nargs=2, default=(0.09, 0.14), metavar=("LOW", "HIGH"),
                        help="the berry's half-length as a share of the side (0.2 0.3: close-ups, the berry larger "
                             "than the ibean recipe's 184-px cells of a 500-px photo)")
    parser.add_argument("--masks-only", action="store_true", help="write only the berries' masks (photos made before)")
    parser.add_argument("--mulch-every", type=int, default=0, metavar="N",
                        help="every N-th fruit photo on straw, black plastic or soil with no leaf (0: none)")
    args = parser.parse_args(argv)
    print(make_dataset(args.out, args.per_class, args.seed, tuple(args.berry), args.masks_only, args.mulch_every))


if __name__ == "__main__":
    main()
