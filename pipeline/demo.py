"""`platepipe demo`: a whole job on the embedded defaults, with the emulator as the cloud."""

from __future__ import annotations

import random
from pathlib import Path

import click
from PIL import Image, ImageDraw

from pipeline.config import ApiSettings, RunSettings, Secret
from pipeline.emulator import start_emulator
from pipeline.report import format_report
from pipeline.runner import run_job
from pipeline.store import Store

DEMO_APP_KEY = "demo-app-key"
DEMO_SECRET_KEY = "demo-secret-key"
CAMERAS = ("gate-north", "gate-south", "parking P2")
SAMPLE_QUERY = """
SELECT value, conf, resolution, path
FROM plate_reads
WHERE job = 'demo'
ORDER BY conf DESC
LIMIT 5
"""


def make_sample_images(folder: Path, count: int, seed: int = 7) -> None:
    """Synthetic night-camera frames in per-camera folders, plus two files the API would reject."""
    rng = random.Random(seed)
    for n in range(count):
        camera = CAMERAS[n % len(CAMERAS)]
        size = (1280, 720) if n % 10 == 0 else (320, 240)
        image = Image.new("RGB", size, (rng.randrange(40), rng.randrange(40), rng.randrange(60)))
        draw = ImageDraw.Draw(image)
        w, h = size
        x, y = rng.randrange(w // 2), rng.randrange(h // 2, h - h // 8)
        draw.rectangle((x, y, x + w // 5, y + h // 12), fill=(235, 235, 235))
        draw.text((x + 4, y + 2), f"{rng.randrange(10, 99)}가{rng.randrange(1000, 9999)}", fill=0)
        target = folder / camera / f"frame-{n:05d}.{'png' if n % 4 == 0 else 'jpg'}"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
    (folder / CAMERAS[0] / "empty.jpg").write_bytes(b"")
    (folder / CAMERAS[1] / "notes.jpg").write_text("not an image\n")


async def run_demo(workdir: str, image_count: int) -> int:
    base = Path(workdir).resolve()
    images = base / "images"
    if not images.exists():
        click.echo(f"making {image_count} sample images in {images}")
        make_sample_images(images, image_count)
    db_url = f"sqlite:///{base / 'demo.db'}"
    runner, url = await start_emulator(app_key=DEMO_APP_KEY, secret_key=DEMO_SECRET_KEY)
    click.echo(f"emulator (synthetic answers, no real recognition) on {url}")
    settings = RunSettings(
        job="demo",
        db_url=db_url,
        api=ApiSettings(url, DEMO_APP_KEY, Secret(DEMO_SECRET_KEY)),
        roots=(str(images),),
        rate_per_s=50,
        concurrency=8,
        quiet=True,
    )
    try:
        async with Store.connect(db_url, ride_out_s=settings.max_db_outage_s) as store:
            report = await run_job(settings, store)
            click.echo(format_report(report))
            click.echo(f"\nresults are in {db_url}; a sample query:{SAMPLE_QUERY}")
            for value, conf, resolution, path in await store.query(SAMPLE_QUERY):
                shown = Path(path).relative_to(base)
                click.echo(f"  {value:<10} {conf:.2f}  {resolution:<6}  {shown}")
    finally:
        await runner.cleanup()
    click.echo(f'\ntry: sqlite3 {base / "demo.db"} "SELECT count(*) FROM plate_reads"')
    return report.exit_code
