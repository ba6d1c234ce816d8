"""Unit tests of fitting pictures over the API's 5 MB (pipeline/fitting.py): the quality and
scale steps, the modes JPEG needs, what cannot be fitted, the boxes mapped back, the read cap.
Real pictures made with Pillow; limits made small so that no test needs a 5 MB picture."""

from __future__ import annotations

import io
import random
import struct
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from pipeline.fitting import (
    MAX_READ_BYTES,
    QUALITY_STEPS,
    Fitter,
    Unfit,
    check,
    fit_image,
    map_answer,
    map_box,
    map_recognition,
    resolution_of,
    with_fit,
)
from pipeline.preflight import MAX_IMAGE_BYTES, read_checked
from pipeline.records import Answer, Call, CallResult, Fit, ItemStatus, Outcome, Plate, Recognition
from tests.support.pictures import JFIF_HEADER, bomb_png


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    bands = len(mode)
    return Image.frombytes(
        mode, (width, height), random.Random(seed).randbytes(width * height * bands)
    )


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- quality, then scale ---------------------------------------------------------------------


def test_a_picture_that_fits_at_the_first_quality_keeps_every_pixel() -> None:
    png = encoded(noise(300, 200))

    data, fit = fit_image(png, limit_bytes=len(png))

    assert fit == Fit(len(data), 1.0, QUALITY_STEPS[0], 300, 200, 300, 200)
    assert len(data) <= len(png)
    sent = decoded(data)
    assert (sent.format, sent.size, sent.mode) == ("JPEG", (300, 200), "RGB")


def test_the_quality_steps_down_before_any_pixel_is_lost() -> None:
    png = encoded(noise(300, 200))
    sizes = {q: len(encoded(noise(300, 200), "JPEG", quality=q)) for q in QUALITY_STEPS}
    limit = (sizes[QUALITY_STEPS[1]] + sizes[QUALITY_STEPS[2]]) // 2  # only the third fits

    data, fit = fit_image(png, limit_bytes=limit)

    assert (fit.quality, fit.scale, fit.sent_width, fit.sent_height) == (
        QUALITY_STEPS[2],
        1.0,
        300,
        200,
    )
    assert len(data) == fit.sent_bytes <= limit


def test_a_picture_too_big_at_the_lowest_quality_is_downscaled_until_it_fits() -> None:
    png = encoded(noise(400, 300))
    lowest = len(encoded(noise(400, 300), "JPEG", quality=QUALITY_STEPS[-1]))
    limit = lowest // 5  # needs about 1/sqrt(5) of the sides

    data, fit = fit_image(png, limit_bytes=limit)

    assert len(data) == fit.sent_bytes <= limit
    assert fit.quality == QUALITY_STEPS[-1]
    assert 0.2 < fit.scale < 0.5
    assert (fit.width, fit.height) == (400, 300)
    assert decoded(data).size == (fit.sent_width, fit.sent_height)
    assert fit.sent_width == round(400 * fit.scale)
    assert abs(fit.sent_height / 300 - fit.scale) < 0.01  # both sides by the same scale


def test_even_a_tiny_limit_ends_with_a_picture_that_fits() -> None:
    data, fit = fit_image(encoded(noise(200, 200)), limit_bytes=2000)

    assert len(data) <= 2000
    assert fit.sent_width < 200


@pytest.mark.parametrize(
    ("mode", "sent_mode"),
    [("RGBA", "RGB"), ("P", "RGB"), ("LA", "L"), ("L", "L"), ("1", "L"), ("CMYK", "RGB")],
)
def test_every_mode_becomes_one_jpeg_takes(mode: str, sent_mode: str) -> None:
    image = noise(64, 48).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"

    data, _fit = fit_image(encoded(image, fmt), limit_bytes=1_000_000)

    assert decoded(data).mode == sent_mode


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped() -> None:
    image = Image.frombytes("I;16", (32, 32), struct.pack("<1024H", *[32768] * 1024))  # mid-grey
    data, _fit = fit_image(encoded(image), limit_bytes=1_000_000)

    sent = decoded(data)
    assert sent.mode == "L"
    assert abs(sent.getpixel((16, 16)) - 128) <= 2  # not 255, as a clip would give


def test_exif_orientation_is_not_applied_and_no_exif_is_sent() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to show
    jpeg = encoded(noise(120, 80), "JPEG", quality=95, exif=exif.tobytes())

    data, fit = fit_image(jpeg, limit_bytes=len(jpeg))

    sent = decoded(data)
    assert sent.size == (120, 80) == (fit.width, fit.height)  # the stored pixel grid
    assert 0x0112 not in sent.getexif()


# --- what cannot be fitted -------------------------------------------------------------------


def test_a_jpeg_header_followed_by_garbage_is_undecodable() -> None:
    data = JFIF_HEADER + random.Random(1).randbytes(50_000)

    with pytest.raises(Unfit) as caught:
        fit_image(data, limit_bytes=1000)

    assert caught.value.reason == "undecodable"
    assert check(data) == ("undecodable", caught.value.message)


def test_a_truncated_png_is_undecodable() -> None:
    png = encoded(noise(200, 200))

    assert check(png[: len(png) // 2])[0] == "undecodable"  # type: ignore[index]


def test_a_decompression_bomb_is_refused_before_a_pixel_is_decoded(tmp_path: Path) -> None:
    bomb_png(tmp_path / "bomb.png", size=200_000)  # 30000 x 30000 pixels in 200 kB

    reason, message = check((tmp_path / "bomb.png").read_bytes())  # type: ignore[misc]

    assert reason == "too_many_pixels"
    assert "30000x30000" in message


def test_a_picture_that_decodes_can_be_fitted() -> None:
    assert check(encoded(noise(50, 50))) is None


# --- boxes back to the original --------------------------------------------------------------

HALF = Fit(
    sent_bytes=1, scale=0.5, quality=60, width=4000, height=3000, sent_width=2000, sent_height=1500
)


def test_a_box_is_divided_by_the_scale_centre_to_centre() -> None:
    box = (100, 200, 300, 200, 300, 260, 100, 260)

    assert map_box(box, HALF) == (200, 400, 600, 400, 600, 520, 200, 520)


def test_a_box_is_mapped_within_the_original() -> None:
    box = (-5, -1, 2000, 0, 2100, 1600, 0, 1500)

    assert map_box(box, HALF) == (0, 0, 3999, 0, 3999, 2999, 0, 2999)


def test_an_unscaled_fit_keeps_the_box() -> None:
    fit = Fit(1, 1.0, 90, 640, 480, 640, 480)
    box = (10, 20, 30, 20, 30, 40, 10, 40)

    assert map_box(box, fit) == box


def test_each_side_has_its_own_scale() -> None:
    fit = Fit(1, 0.4, 60, 1000, 1000, 400, 250)

    x, y = map_box((100, 100, 100, 100, 100, 100, 100, 100), fit)[:2]

    assert (x, y) == (251, 402)  # (100.5 / 0.4 - 0.5, 100.5 / 0.25 - 0.5), rounded


def test_a_recognition_is_mapped_and_judged_on_the_original_s_sides() -> None:
    recognition = Recognition(
        "jpg",
        "low",
        (Plate("12가3456", 0.9, (100, 200, 300, 200, 300, 260, 100, 260)), Plate("x", None, None)),
        raw='{"raw": "as sent"}',
    )

    mapped = map_recognition(recognition, HALF)

    assert mapped.plates[0] == Plate("12가3456", 0.9, (200, 400, 600, 400, 600, 520, 200, 520))
    assert mapped.plates[1] == Plate("x", None, None)
    assert mapped.resolution == "normal"  # 4000x3000, though 2000x1500 was sent
    assert mapped.raw == recognition.raw and mapped.file_type == "jpg"


def test_an_answer_without_a_fit_or_a_recognition_is_left_as_it_is() -> None:
    answer = Answer("0", "ok", 0.1, 200, Recognition("jpg", "normal", (), "{}"))
    failure = Answer("4000002", "invalid file", 0.1, 200)

    assert map_answer(answer, None) is answer
    assert map_answer(failure, HALF) is failure


@pytest.mark.parametrize(
    ("size", "resolution"),
    [((1280, 720), "normal"), ((720, 1280), "normal"), ((1279, 720), "low"), ((4000, 700), "low")],
)
def test_resolution_is_nhn_s_rule(size: tuple[int, int], resolution: str) -> None:
    assert resolution_of(*size) == resolution


# --- in the run: what is read and what is sent -----------------------------------------------


async def test_a_small_picture_is_sent_as_it_is() -> None:
    jpeg = encoded(noise(40, 30), "JPEG")

    upload = await Fitter(enabled=True).upload(jpeg)

    assert not isinstance(upload, tuple)
    assert (upload.data, upload.filename, upload.content_type, upload.fit) == (
        jpeg,
        "image.jpg",
        "image/jpeg",
        None,
    )


async def test_without_fitting_a_big_picture_is_too_large() -> None:
    data = JFIF_HEADER + bytes(MAX_IMAGE_BYTES)
    fitter = Fitter(enabled=False)

    assert fitter.read_limit_bytes == MAX_IMAGE_BYTES
    assert (await fitter.upload(data))[0] == "too_large"  # type: ignore[index]


async def test_an_undecodable_big_file_is_skipped_with_its_reason() -> None:
    data = JFIF_HEADER + random.Random(1).randbytes(MAX_IMAGE_BYTES)

    reason, message = await Fitter(enabled=True).upload(data)  # type: ignore[misc]

    assert reason == "undecodable" and message


async def test_with_fitting_a_file_is_read_whole_up_to_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    with open(path, "wb") as file:
        file.write(JFIF_HEADER)
        file.truncate(MAX_IMAGE_BYTES + 10)  # sparse: cheap to make
    over = tmp_path / "over.jpg"
    with open(over, "wb") as file:
        file.write(JFIF_HEADER)
        file.truncate(MAX_READ_BYTES + 1)

    read = await read_checked(str(path), Fitter(enabled=True).read_limit_bytes)
    reason, message = await read_checked(str(over), Fitter(enabled=True).read_limit_bytes)  # type: ignore[misc]

    assert len(read.data) == MAX_IMAGE_BYTES + 10  # type: ignore[union-attr]
    assert reason == "too_large" and str(MAX_READ_BYTES) in message


async def test_the_dry_run_s_check_skips_what_the_run_skips(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(JFIF_HEADER + random.Random(1).randbytes(MAX_IMAGE_BYTES))
    (tmp_path / "ok.jpg").write_bytes(encoded(noise(40, 30), "JPEG"))
    fitter = Fitter(enabled=True)

    bad = await fitter.preflight(str(tmp_path / "bad.jpg"))
    ok = await fitter.preflight(str(tmp_path / "ok.jpg"))
    unfitted = await Fitter(enabled=False).preflight(str(tmp_path / "bad.jpg"))

    assert bad[0] == "undecodable"  # type: ignore[index]
    assert not isinstance(ok, tuple)
    assert unfitted[0] == "too_large"  # type: ignore[index]


def test_an_outcome_of_a_fitted_picture_carries_the_fit_and_the_mapped_boxes() -> None:
    box = (100, 200, 300, 200, 300, 260, 100, 260)
    answer = Answer("0", "ok", 0.1, 200, Recognition("jpg", "low", (Plate("1", 0.5, box),), "{}"))
    outcome = Outcome(
        7, ItemStatus.DONE, 1, call=Call(datetime(2026, 11, 30), answer, CallResult.DONE)
    )

    fitted = with_fit(outcome, HALF)

    assert fitted.fit == HALF
    assert fitted.recognition.plates[0].box == map_box(box, HALF)  # type: ignore[union-attr]
    assert with_fit(outcome, None) is outcome
    skipped = Outcome(8, ItemStatus.SKIPPED, 0, "undecodable", "no")
    assert with_fit(skipped, HALF) is skipped  # no call, nothing sent
