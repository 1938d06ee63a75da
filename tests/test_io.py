import numpy as np
import pytest
from PIL import Image

from ovdet import io as io_module
from ovdet.errors import ImageReadError, ImageTooLargeError
from ovdet.io import DEFAULT_MAX_PIXELS, expand_image_args, load_image, read_image


def gradient(h=30, w=40):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6 % 256, y * 8 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_rgb_path_pil_and_array_agree(tmp_path):
    rgb = gradient()
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    for source in (path, str(path), Image.open(path), rgb):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
        np.testing.assert_array_equal(out, rgb)
    assert load_image(path).flags.writeable


def test_grayscale_rgba_palette_and_16bit(tmp_path):
    gray = gradient()[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out[..., 0], gray)
    np.testing.assert_array_equal(out[..., 2], gray)

    rgba = np.dstack([gradient(), np.full((30, 40), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), gradient())

    Image.fromarray(gradient()).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (30, 40, 3)

    sixteen = (gray.astype(np.uint16) << 8) | 0x7F
    Image.fromarray(sixteen).save(tmp_path / "s.png")  # a 16-bit grayscale PNG
    np.testing.assert_array_equal(load_image(tmp_path / "s.png")[..., 1], gray)
    np.testing.assert_array_equal(load_image(sixteen)[..., 0], gray)
    np.testing.assert_array_equal(load_image(gradient().astype(np.float32) / 255.0), gradient())


def test_exif_orientation_is_applied(tmp_path):
    rgb = gradient(20, 50)  # landscape pixels, tagged "rotate 90": the user sees portrait
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    out = load_image(tmp_path / "rot.jpg")
    assert out.shape == (50, 20, 3)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.jpg", "image not found"),
        (lambda p: (p / "bad.jpg").write_bytes(b"not an image") and p / "bad.jpg", "cannot read image"),
        (lambda p: p, "directory"),
    ],
)
def test_unreadable_inputs_raise_one_line(tmp_path, make, message):
    with pytest.raises(ImageReadError, match=message) as err:
        load_image(make(tmp_path))
    assert "\n" not in str(err.value)


def test_bad_arrays_and_types():
    with pytest.raises(ImageReadError, match="shape"):
        load_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageReadError, match="no pixels"):
        load_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ImageReadError, match="unsupported image type"):
        load_image(12)


def test_above_max_pixels_one_line_says_how_to_raise_it(tmp_path):
    Image.fromarray(gradient(100, 120)).save(tmp_path / "big.png")
    for source in (tmp_path / "big.png", gradient(100, 120)):
        with pytest.raises(ImageTooLargeError, match="above max_pixels") as err:
            load_image(source, max_pixels=11_999)
        assert "--max-pixels 12000" in str(err.value) and "\n" not in str(err.value)
    assert load_image(tmp_path / "big.png", max_pixels=12_000).shape == (100, 120, 3)
    assert DEFAULT_MAX_PIXELS >= 20000 * 20000


def test_jpeg_draft_decodes_reduced_and_keeps_the_original_size(tmp_path):
    rgb = np.asarray(Image.fromarray(gradient(150, 200)).resize((2000, 1500)))
    Image.fromarray(rgb).save(tmp_path / "p.jpg", quality=95)
    full = read_image(tmp_path / "p.jpg")
    assert not full.reduced and full.size == (1500, 2000)
    seen = []
    reduced = read_image(tmp_path / "p.jpg", decode_size=lambda h, w: seen.append((h, w)) or (300, 400))
    assert seen == [(1500, 2000)] and reduced.size == (1500, 2000) and reduced.reduced
    assert reduced.array.shape == (375, 500, 3)  # 1/4: the largest DCT reduction that keeps >= 300 x 400
    small = np.asarray(Image.fromarray(full.array).resize((500, 375), Image.BOX), dtype=float)
    assert np.abs(reduced.array - small).mean() < 3  # the same picture
    # PNGs are not reduced; EXIF-rotated JPEGs report their rotated size
    Image.fromarray(rgb).save(tmp_path / "p.png")
    assert not read_image(tmp_path / "p.png", decode_size=lambda h, w: (10, 10)).reduced
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    rot = read_image(tmp_path / "rot.jpg", decode_size=lambda h, w: (h // 4, w // 4))
    assert rot.size == (2000, 1500) and rot.array.shape == (500, 375, 3)


@pytest.mark.parametrize("name, orientation", [("a.png", 1), ("b.jpg", 1), ("c.jpg", 6), ("d.jpg", 3)])
def test_large_images_packed_in_place_equal_the_usual_decode(tmp_path, monkeypatch, name, orientation):
    rgb = gradient(60, 90)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(tmp_path / name, exif=exif.tobytes(), **({"quality": 95} if name.endswith("jpg") else {}))
    want = load_image(tmp_path / name)
    monkeypatch.setattr(io_module, "LARGE_DECODE_PIXELS", 100)
    got = load_image(tmp_path / name)
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous and got.flags.writeable


def test_expand_image_args(tmp_path):
    for name in ("b.jpg", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert list(expand_image_args([str(tmp_path)])) == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    assert list(expand_image_args([str(tmp_path / "*.jpg")])) == [str(tmp_path / "b.jpg")]
    # a pattern or name that matches nothing is passed on, so it gets reported, not dropped
    assert list(expand_image_args([str(tmp_path / "*.gif"), "nope.jpg"])) == [str(tmp_path / "*.gif"), "nope.jpg"]


def test_atomic_output_leaves_no_partial_file(tmp_path):
    from ovdet.files import atomic_output, write_json

    target = tmp_path / "sub" / "r.json"
    write_json(target, {"a": 1}, indent=None)
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("killed mid-write")
    assert target.read_text().strip() == '{"a": 1}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.json"]  # no temporary left
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # umask permissions, not mkstemp's


def test_unreadable_file_is_an_image_error_after_ultralytics_patched_pil(tmp_path):
    """ultralytics replaces PIL.Image.open with a wrapper that imports a HEIF plugin when PIL
    cannot identify a file; without that plugin a broken JPEG must still read as unreadable."""
    import subprocess
    import sys

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    code = ("import ultralytics.utils.patches, PIL.Image\n"
            "from ovdet.errors import ImageReadError\n"
            "from ovdet.io import decode_image_bytes, load_image\n"
            f"try:\n    load_image({str(broken)!r})\nexcept ImageReadError as e:\n    print('ImageReadError', e)\n"
            # an upload (ovdet serve) is decoded by the same code
            "try:\n    decode_image_bytes(b'not an image', name='upload')\n"
            "except ImageReadError as e:\n    print('ImageReadError', e)\n")
    env = {**__import__("os").environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    # ultralytics logs its missing-plugin note before each
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("WARNING")]
    assert len(lines) == 2, proc.stdout
    for line in lines:
        assert line.startswith("ImageReadError cannot read image") and "cannot identify image file" in line, proc.stdout
    assert "upload" in lines[1] and "BytesIO" not in lines[1]
