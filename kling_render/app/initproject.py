"""``kling-render init``: a small project with its own images that renders offline.

The images are drawn with Pillow (no fonts, no assets shipped): a stylised ceramic mug
on a walnut table, empty, from the side, and full of coffee. They are small PNGs that
pass the strictest image limits of the catalog (v3.0: ≥ 300 px a side, aspect within
1:2.5..2.5:1).
"""

from __future__ import annotations

import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from kling_render.errors import UsageError
from kling_render.fsutil import atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["EXAMPLE_IMAGES", "write_example_images", "write_init_project"]

SS = 2  # drawn at twice the size and scaled down: cheap anti-aliasing
PALETTE_COLORS = 256  # one palette byte per pixel keeps each PNG under 60 KB

WALL_TOP, WALL_BOTTOM = (238, 229, 214), (206, 189, 166)
WOOD_BACK, WOOD_FRONT = (121, 80, 50), (72, 44, 26)
GLAZE_LIGHT, GLAZE_DARK = (86, 160, 168), (22, 74, 84)
INSIDE = (30, 46, 50)
COFFEE, CREMA = (64, 38, 22), (150, 104, 66)


@dataclass(frozen=True)
class _Scene:
    name: str
    size: tuple[int, int]
    table_y: float  # where the table top meets the wall, as a fraction of the height
    mug_x: float  # mug centre, as a fraction of the width
    mug_w: float  # mug body width, as a fraction of the height
    full: bool  # coffee in the mug, steam above it
    handle_left: bool = False


EXAMPLE_IMAGES = (
    _Scene("mug.png", (1280, 720), 0.58, 0.5, 0.34, full=False),
    _Scene("mug-side.png", (720, 720), 0.52, 0.46, 0.42, full=False, handle_left=True),
    _Scene("mug-full.png", (1280, 720), 0.58, 0.5, 0.34, full=True),
)

PROJECT_YAML = """\
# yaml-language-server: $schema={schema}
# A starter project: it renders offline with the local provider (ffmpeg animatics).
# Switch `provider` to wavespeed (and set WAVESPEED_API_KEY) to generate real clips.
version: 1
name: {name}
provider: local
vars: {{product: ceramic mug, light: soft morning light}}
prompts:
  base: "a {{{{ product }}}} on a walnut table, {{{{ light }}}}"
defaults: {{model: kling-v3.0-std/image-to-video, duration: 5, sound: false}}
shots:
  - id: intro
    prompt: "{{{{ prompts.base }}}}, slow push-in"
    image: images/mug.png
  - id: pour
    model: kling-video-o3-std/image-to-video
    prompt: "coffee pours into the {{{{ product }}}}, steam rising"
    image: images/mug.png
    end_image: images/mug-full.png
    duration: 4
    sound: true
    transition: {{type: fade, duration: 0.5}}
  - id: hero
    model: kling-video-o3-std/reference-to-video
    prompt: "the {{{{ product }}}} turns slowly on the table, {{{{ light }}}}"
    images: [images/mug.png, images/mug-side.png]
    aspect_ratio: "16:9"
    duration: 3
    transition: {{type: dissolve, duration: 0.5}}
output: {{path: renders/final.mp4, width: 1280, height: 720, fps: 24, fit: contain}}
"""

GITIGNORE = "# kling-render state and clip cache, and the rendered cuts\n.kling-render/\nrenders/\n"


def _lerp(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def _vertical_gradient(
    size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]
) -> Image.Image:
    column = Image.new("RGB", (1, 256))
    column.putdata([_lerp(top, bottom, i / 255) for i in range(256)])
    return column.resize(size, Image.Resampling.BILINEAR)


def _cylinder_shading(size: tuple[int, int]) -> Image.Image:
    """Glaze colours across a cylinder: a soft highlight left of centre, darker at both edges."""
    row = Image.new("RGB", (256, 1))
    values = []
    for i in range(256):
        x = i / 255
        light = max(0.0, math.cos((x - 0.32) * math.pi * 0.95)) ** 1.4
        values.append(_lerp(GLAZE_DARK, GLAZE_LIGHT, light))
    row.putdata(values)
    return row.resize(size, Image.Resampling.BILINEAR)


def _blur(mask: Image.Image, radius: float) -> Image.Image:
    """Gaussian-blur a mask, working only on the region around what is drawn (much cheaper)."""
    box = mask.getbbox()
    if box is None:
        return mask
    pad = math.ceil(radius * 3)
    box = (
        max(0, box[0] - pad),
        max(0, box[1] - pad),
        min(mask.width, box[2] + pad),
        min(mask.height, box[3] + pad),
    )
    out = Image.new("L", mask.size, 0)
    out.paste(mask.crop(box).filter(ImageFilter.GaussianBlur(radius)), box[:2])
    return out


def _draw_table(img: Image.Image, top: int) -> None:
    w, h = img.size
    img.paste(_vertical_gradient((w, h - top), WOOD_BACK, WOOD_FRONT), (0, top))
    draw = ImageDraw.Draw(img)
    # Grain: long, gently wavy lines that spread out towards the viewer.
    for k in range(14):
        y0 = top + (h - top) * (k / 14) ** 1.6 + 6 * SS
        shade = _lerp(WOOD_BACK, WOOD_FRONT, (y0 - top) / (h - top))
        dark = tuple(max(0, c - 18) for c in shade)
        pts = [
            (x, y0 + 3 * SS * math.sin(x / (90 * SS) + k * 1.7) + 2 * SS * math.sin(x / (23 * SS) + k))
            for x in range(0, w + 16, 16)
        ]
        draw.line(pts, fill=dark, width=SS * (1 + k // 5))
    # The table's back edge catches the light.
    draw.line([(0, top), (w, top)], fill=(156, 112, 76), width=2 * SS)


def _draw_mug(img: Image.Image, scene: _Scene) -> None:
    w, h = img.size
    table = round(h * scene.table_y)
    body_w = round(h * scene.mug_w)
    body_h = round(body_w * 1.05)
    rim_h = round(body_w * 0.22)
    cx = round(w * scene.mug_x)
    left, right = cx - body_w // 2, cx + body_w // 2
    bottom = table + round((h - table) * 0.45)
    top = bottom - body_h

    # Contact shadow, blurred on its own layer.
    shadow = Image.new("L", img.size, 0)
    ImageDraw.Draw(shadow).ellipse(
        [left - body_w * 0.1, bottom - rim_h * 0.55, right + body_w * 0.35, bottom + rim_h * 0.55], fill=140
    )
    img.paste((40, 24, 14), (0, 0), _blur(shadow, 14 * SS))

    draw = ImageDraw.Draw(img)
    # Handle: a thick ring half hidden behind the body.
    hw, hh = round(body_w * 0.42), round(body_h * 0.56)
    hx = left - hw * 0.62 if scene.handle_left else right - hw * 0.38
    hy = top + body_h * 0.2
    draw.ellipse([hx, hy, hx + hw, hy + hh], outline=GLAZE_DARK, width=round(body_w * 0.09))
    draw.ellipse(
        [hx + SS * 3, hy + SS * 3, hx + hw - SS * 3, hy + hh - SS * 3],
        outline=_lerp(GLAZE_DARK, GLAZE_LIGHT, 0.45),
        width=round(body_w * 0.05),
    )

    # Body: a rectangle with an elliptic bottom, shaded like a cylinder.
    mask = Image.new("L", img.size, 0)
    mdraw = ImageDraw.Draw(mask)
    mdraw.rectangle([left, top, right, bottom - rim_h // 2], fill=255)
    mdraw.ellipse([left, bottom - rim_h, right, bottom], fill=255)
    box = (left, top - rim_h // 2, right + 1, bottom + 1)
    shading = _cylinder_shading((box[2] - box[0], box[3] - box[1]))
    img.paste(shading, box[:2], mask.crop(box))

    # A cream band around the body, following the curve of the cylinder.
    band = Image.new("L", img.size, 0)
    bdraw = ImageDraw.Draw(band)
    band_y = top + round(body_h * 0.58)
    band_t = round(body_h * 0.09)
    bdraw.ellipse([left, band_y - rim_h // 2, right, band_y + rim_h // 2 + band_t], fill=255)
    bdraw.ellipse([left, band_y - rim_h // 2 - band_t, right, band_y + rim_h // 2], fill=0)
    band = ImageChops.multiply(band, mask)
    img.paste((233, 221, 196), (0, 0), band.point(lambda v: v * 85 // 100))

    # Specular streak, blurred.
    streak = Image.new("L", img.size, 0)
    sx = left + round(body_w * 0.2)
    ImageDraw.Draw(streak).rounded_rectangle(
        [sx, top + body_h * 0.12, sx + body_w * 0.06, bottom - body_h * 0.12], radius=body_w * 0.03, fill=120
    )
    streak = ImageChops.multiply(_blur(streak, 5 * SS), mask)
    img.paste((255, 255, 255), (0, 0), streak)

    # Rim and the inside (or the coffee).
    draw.ellipse(
        [left, top - rim_h // 2, right, top + rim_h // 2], fill=_lerp(GLAZE_LIGHT, (255, 255, 255), 0.35)
    )
    lip = round(body_w * 0.045)
    inner = [left + lip, top - rim_h // 2 + lip * 0.5, right - lip, top + rim_h // 2 - lip * 0.5]
    draw.ellipse(inner, fill=INSIDE)
    if scene.full:
        liquid = [inner[0] + lip * 0.5, inner[1] + rim_h * 0.12, inner[2] - lip * 0.5, inner[3]]
        draw.ellipse(liquid, fill=COFFEE)
        cw = (liquid[2] - liquid[0]) * 0.55
        ch = (liquid[3] - liquid[1]) * 0.5
        ccx, ccy = (liquid[0] + liquid[2]) / 2, (liquid[1] + liquid[3]) / 2
        draw.ellipse([ccx - cw / 2, ccy - ch / 2, ccx + cw / 2, ccy + ch / 2], fill=CREMA)
        _draw_steam(img, cx, top - rim_h // 2, body_w)


def _draw_steam(img: Image.Image, cx: int, rim_top: int, body_w: int) -> None:
    layer = Image.new("L", img.size, 0)
    draw = ImageDraw.Draw(layer)
    rise = body_w * 0.9
    for k, dx in enumerate((-0.18, 0.02, 0.2)):
        x0 = cx + body_w * dx
        pts = [
            (x0 + body_w * 0.05 * math.sin(t / 40 * math.pi * 2 + k * 2.1), rim_top - rise * t / 90)
            for t in range(91)
        ]
        draw.line(pts, fill=150, width=round(body_w * 0.035), joint="curve")
    img.paste((255, 255, 255), (0, 0), _blur(layer, 6 * SS))


def _render(scene: _Scene) -> Image.Image:
    w, h = scene.size[0] * SS, scene.size[1] * SS
    img = _vertical_gradient((w, h), WALL_TOP, WALL_BOTTOM)
    # A soft pool of window light on the wall behind the mug.
    # Drawn and blurred at 1/8 scale, then enlarged: the same soft light at a fraction of the cost.
    gw, gh = w // 8, h // 8
    glow = Image.new("L", (gw, gh), 0)
    gx, gy = gw * (scene.mug_x - 0.05), gh * 0.28
    ImageDraw.Draw(glow).ellipse([gx - gh * 0.55, gy - gh * 0.3, gx + gh * 0.55, gy + gh * 0.3], fill=90)
    glow = glow.filter(ImageFilter.GaussianBlur(60 * SS / 8)).resize((w, h), Image.Resampling.BILINEAR)
    img.paste((252, 246, 234), (0, 0), glow)
    _draw_table(img, round(h * scene.table_y))
    _draw_mug(img, scene)
    small = img.resize(scene.size, Image.Resampling.LANCZOS)
    return small.quantize(PALETTE_COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def write_example_images(dest_dir: Path) -> list[Path]:
    """Draw the example images into ``dest_dir`` (created if needed); return their paths."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for scene in EXAMPLE_IMAGES:
        path = dest_dir / scene.name
        with atomic_path(path, suffix=".png") as tmp:
            _render(scene).save(tmp, format="PNG", optimize=True)
        written.append(path)
    return written


def _packaged_schema() -> bytes | None:
    resource = importlib.resources.files("kling_render") / "data" / "project.schema.json"
    return resource.read_bytes() if resource.is_file() else None


def _project_name(dest: Path) -> str:
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in dest.resolve().name).lstrip("._-")
    return name[:100] or "my-video"


def _extend_gitignore(path: Path) -> None:
    """Write the ignore rules, or add the missing ones to a .gitignore that is already there."""
    if not path.exists():
        atomic_write_text(path, GITIGNORE)
        return
    text = path.read_text("utf-8")
    present = {line.strip() for line in text.splitlines()}
    missing = [
        line for line in GITIGNORE.splitlines() if line and not line.startswith("#") and line not in present
    ]
    if missing:
        sep = "" if text.endswith("\n") or not text else "\n"
        atomic_write_text(path, text + sep + "\n".join(missing) + "\n")


def write_init_project(dest: Path) -> Path:
    """Write a small working project into ``dest``; return the project file's path.

    Refuses (UsageError) when ``dest/project.yaml`` already exists. The JSON Schema is
    copied beside the project so editors validate it with no network.
    """
    project = dest / "project.yaml"
    if project.exists():
        raise UsageError(f"{project} already exists; not overwriting it")
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a directory")
    write_example_images(dest / "images")
    schema = _packaged_schema()
    schema_ref = "./project.schema.json"
    if schema is not None:
        atomic_write_bytes(dest / "project.schema.json", schema)
    _extend_gitignore(dest / ".gitignore")
    text = PROJECT_YAML.format(schema=schema_ref, name=_project_name(dest))
    if schema is None:
        text = text.split("\n", 1)[1]  # no schema to point at: leave the comment out
    atomic_write_text(project, text)
    return project
