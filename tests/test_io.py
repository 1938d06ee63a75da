import numpy as np
import pytest
from PIL import Image

from ovdet.errors import ImageReadError
from ovdet.io import expand_image_args, load_image


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


def test_huge_image_is_refused_clearly(tmp_path, monkeypatch):
    Image.fromarray(gradient(100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # stand-in for ovdet's 400 Mpx ceiling
    with pytest.raises(ImageReadError, match="too large"):
        load_image(tmp_path / "big.png")


def test_expand_image_args(tmp_path):
    for name in ("b.jpg", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert list(expand_image_args([str(tmp_path)])) == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    assert list(expand_image_args([str(tmp_path / "*.jpg")])) == [str(tmp_path / "b.jpg")]
    # a pattern or name that matches nothing is passed on, so it gets reported, not dropped
    assert list(expand_image_args([str(tmp_path / "*.gif"), "nope.jpg"])) == [str(tmp_path / "*.gif"), "nope.jpg"]


def test_atomic_output_leaves_no_partial_file(tmp_path):
    from ovdet.io import atomic_output, write_json_atomic

    target = tmp_path / "sub" / "r.json"
    write_json_atomic(target, {"a": 1})
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
            "from ovdet.io import load_image\n"
            f"try:\n    load_image({str(broken)!r})\nexcept ImageReadError as e:\n    print('ImageReadError', e)\n")
    env = {**__import__("os").environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]  # ultralytics logs its missing-plugin note first
    assert last.startswith("ImageReadError cannot read image") and "cannot identify image file" in last, proc.stdout
