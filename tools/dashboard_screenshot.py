"""Screenshots of the dashboard on the example pipeline, for the README (docs/).

Starts a Redis of its own, runs a copy of ``configs/pipeline.yaml`` with
``--ui-port``, feeds it orders for a while (every 97th without an amount: it
fails, is retried and lands on the dead-letter stream) so the rates, sparklines
and dead letters have something to show, adds a sink to the copy halfway (a
reload), then photographs the page with Debian's headless Chromium
(``.ci/install-browser``): ``docs/dashboard.png``, and once Redis is stopped,
``docs/dashboard-redis-unreachable.png``.

    python tools/dashboard_screenshot.py [--seconds 45] [--rate 120] [--out docs]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from topology.server import ServerProcess
from topology.streams import Connection

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "configs"
#: Appended to the copy halfway: the reload the page then lists and draws.
ADDED_SINK = """\
  audit:
    streams: [alerts]
    handler: handlers:report
"""


async def feed(url: str, seconds: float, rate: float) -> int:
    """Orders on both topics at about ``rate`` per second for ``seconds``; how many."""
    client = aioredis.Redis.from_url(url)
    stream = Connection(client).stream("orders", max_len=100_000)
    sent, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            batch = []
            for _ in range(max(1, int(rate / 10))):
                region = "eu" if sent % 2 == 0 else "us"
                amount = None if sent % 97 == 96 else round((sent * 37) % 1000 + 0.99, 2)
                order = {"id": 10_000 + sent, "region": region, "place": "x", "amount": amount}
                batch.append(("order.created", order, f"{region}.orders"))
                sent += 1
            await stream.add_many(batch)
            await asyncio.sleep(0.1)  # a pace, not a synchronisation
    finally:
        await client.aclose()
    return sent


def open_page(url: str, width: int) -> Any:
    """A headless Chromium showing ``url`` once its graph is drawn."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},1200")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.get(url)
    deadline = time.monotonic() + 30
    while not driver.execute_script("return !!document.querySelector('#graph svg')"):
        if time.monotonic() > deadline:
            driver.quit()
            raise SystemExit("the graph never rendered")
        time.sleep(0.2)
    return driver


def shoot(driver: Any, path: Path, width: int) -> None:
    """The whole page in one picture (no scrollbar)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    time.sleep(1.5)  # the next update drawn at the new size
    driver.save_screenshot(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--rate", type=float, default=120.0)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp) / "redis") as server:
        config = Path(tmp) / "pipeline.yaml"
        shutil.copy(EXAMPLE / "pipeline.yaml", config)
        shutil.copy(EXAMPLE / "handlers.py", Path(tmp) / "handlers.py")
        log = Path(tmp) / "run.log"
        with log.open("wb") as out:
            run = subprocess.Popen(
                [sys.executable, "-m", "topology.cli", "run", str(config),
                 "--redis-url", server.url, "--ui-port", "0", "--quiet"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not (found := re.findall(r"http://127\.0\.0\.1:\d+/", log.read_text())):
                if run.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"run did not serve the dashboard:\n{log.read_text()}")
                time.sleep(0.1)
            # The page open from the start: its sparklines cover the whole run. Photographed
            # while the orders still flow, so the rates are not zero.
            driver = open_page(found[0], args.width)
            try:
                fed: list[int] = []
                feeder = threading.Thread(
                    target=lambda: fed.append(
                        asyncio.run(feed(server.url, args.seconds, args.rate))
                    )
                )
                feeder.start()
                time.sleep(args.seconds / 2)  # a pace, not a synchronisation
                with config.open("a", encoding="utf-8") as handle:
                    handle.write(ADDED_SINK)
                time.sleep(max(0.0, args.seconds / 2 - 5))
                shoot(driver, args.out / "dashboard.png", args.width)
                feeder.join()
                server.stop()  # the page keeps its picture and says why it stopped moving
                deadline = time.monotonic() + 30
                while "unreachable" not in driver.find_element("id", "state").text:
                    if time.monotonic() > deadline:
                        raise SystemExit("the page never said Redis was unreachable")
                    time.sleep(0.2)
                shoot(driver, args.out / "dashboard-redis-unreachable.png", args.width)
            finally:
                driver.quit()
            print(f"fed {fed[0] if fed else '?'} orders")
        finally:
            run.terminate()
            t0 = time.monotonic()
            try:
                run.wait(60)
                print(f"run stopped in {time.monotonic() - t0:.1f}s")
            except subprocess.TimeoutExpired:
                run.kill()
                raise SystemExit(f"run did not stop:\n{log.read_text()[-3000:]}") from None
    print(f"wrote {args.out / 'dashboard.png'} and dashboard-redis-unreachable.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
