"""The README's screenshot of `cartoon web` (docs/web-demo.png), taken after a real run.

Run: .venv/bin/python benchmarks/web_screenshot.py [--root .] [--model REF] [--out docs/web-demo.png]

The project's MLflow store (``ROOT/mlflow.db`` and ``ROOT/mlartifacts``) is copied to a
temporary folder, with the copy's artifact locations pointed at the copied artifacts, so nothing
under ROOT is written or read by the page. The page starts on that copy (`cartoon web`, a free
127.0.0.1 port); Debian's headless chromium uploads a bundled photograph (scikit-image's
``chelsea``), picks ``--model`` in the dropdown (default: the first registered alias), runs it
and saves a screenshot of the whole page.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from skimage import data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cartoon.data.imageio import write_png


def copy_store(root: Path, into: Path) -> str:
    """Copy mlflow.db and mlartifacts into ``into``; rewrite the copy's absolute artifact
    locations to the copied folder. Returns the copy's tracking URI."""
    shutil.copy2(root / "mlflow.db", into / "mlflow.db")
    shutil.copytree(root / "mlartifacts", into / "mlartifacts")
    old, new = (root / "mlartifacts").as_uri(), (into / "mlartifacts").as_uri()
    with sqlite3.connect(into / "mlflow.db") as db:
        tables = [
            row[0]
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            for column in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                if column[2].upper().startswith(("VARCHAR", "TEXT")):
                    db.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?) '
                        f'WHERE "{column[1]}" LIKE ?',
                        (old, new, old + "%"),
                    )
    return f"sqlite:///{into / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def browser():
    """Headless Debian chromium through its own chromedriver; it can reach only 127.0.0.1."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1280,900", "--hide-scrollbars",
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(
        service=Service(executable_path=shutil.which("chromedriver")), options=options
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="project holding mlflow.db and mlartifacts",
    )
    parser.add_argument("--model", help="dropdown entry to pick (default: the first)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "web-demo.png")
    args = parser.parse_args(argv)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory(prefix="cartoon-web-shot-") as folder:
        work = Path(folder)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": copy_store(args.root.resolve(), work),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), os.environ.get("PYTHONPATH", "")]
            ),
        }  # this checkout's cartoon
        write_png(work / "chelsea.png", data.chelsea())
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "cartoon.cli",
            "web",
            "--port",
            str(port),
            "--device",
            "cpu",
        ]
        server = subprocess.Popen(command, cwd=work, env=env, start_new_session=True)
        driver = None
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/", timeout=2
                    ).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("cartoon web did not start") from None
                    time.sleep(0.5)
            driver = browser()
            driver.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(driver, 300)
            wait.until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]")
            )
            driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(
                str(work / "chelsea.png")
            )
            driver.find_element(By.CSS_SELECTOR, "#model input").click()
            options = driver.find_elements(By.CSS_SELECTOR, "#model li[role=option]")
            labels = [option.get_attribute("aria-label") for option in options]
            print("dropdown:", labels)
            options[labels.index(args.model) if args.model else 0].click()
            wait.until(
                lambda d: d.find_elements(
                    By.CSS_SELECTOR, "#upload button[aria-label=Clear]"
                )
            )
            driver.find_element(By.ID, "run").click()
            wait.until(
                lambda d: "cartoonized with" in d.find_element(By.ID, "status").text
            )
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cartoon img"))
            wait.until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "#download a[download]")
            )
            time.sleep(2)  # let the images and the download row finish drawing
            bottom = driver.execute_script(
                "return document.getElementById('download').getBoundingClientRect().bottom"
            )
            # A viewport exactly as tall as the page (a window size would include the browser's frame).
            metrics = {
                "width": 1280,
                "height": int(bottom) + 64,
                "deviceScaleFactor": 1,
                "mobile": False,
            }
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            time.sleep(0.5)
            print("status:", driver.find_element(By.ID, "status").text)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
            print("wrote", args.out)
        finally:
            if driver is not None:
                driver.quit()
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
