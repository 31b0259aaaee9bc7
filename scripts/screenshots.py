"""Screenshots for README, taken in a real headless browser from a running scripts/develop.

    scripts/develop &                                   # Home Assistant 2026 with the four simulators
    python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
    /tmp/pw/bin/python scripts/screenshots.py [--chromium /usr/bin/chromium] [--url http://127.0.0.1:8123] [--out docs]

Needs Debian's chromium (`apt-get install chromium`; `playwright install` is not used) and Playwright for Python,
kept out of the project's requirements: this is no test and no part of CI. Logs in with the develop login, then
writes docs/dashboard.png (the Meter Cloud dashboard, IoT platform tab), docs/config-flow.png (Add integration →
Meter Cloud: the vendor choice), docs/config-flow-account.png (the KUMIR-RESURS account form), docs/device.png (a
Goldcard meter's device page) and docs/energy-picker.png (Energy → Gas → Add gas source, the statistic picker
searched for a KUMIR-RESURS node). Nothing is saved in Home Assistant: the flow and the dialog are closed unsaved.
It also prints every statistic the gas and grid pickers offer, and says which appear more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from develop_seed import DEV_PASSWORD, DEV_USERNAME  # beside this script

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 900}
SETTLE_MS = 3000  # after a page's data arrived: charts animate, icons load
GOLDCARD_METER = "Goldcard 201911260001"  # the simulator's first meter
PICKER_SEARCH = "Pol_276"  # a KUMIR-RESURS electricity meter: its tariffs' import and export

# The open picker's list is a lit-virtualizer deep in shadow roots. It renders only the rows in view, but holds
# every row it offers (`items`: the statistic id, the name and the device's name the row shows).
PICKER_ROWS = """() => {
  const find = (node) => {
    if (!node) return null;
    if (node.tagName === "LIT-VIRTUALIZER") return node;
    for (const child of [...(node.shadowRoot ? node.shadowRoot.children : []), ...(node.children || [])]) {
      const found = find(child);
      if (found) return found;
    }
    return null;
  };
  const list = find(document.body);
  const row = (item) => (typeof item === "string" ? [item, item, ""] : [item.id, item.primary, item.secondary]);
  return list ? list.items.map(row) : [];
}"""


async def login(page: Page, url: str) -> None:
    """The login form as a person fills it in."""
    await page.goto(f"{url}/")
    fields = page.locator("ha-auth-flow input")
    await fields.first.wait_for()
    await fields.nth(0).fill(DEV_USERNAME)
    await fields.nth(1).fill(DEV_PASSWORD)
    await page.keyboard.press("Enter")
    # Logged in once the frontend has exchanged the code for tokens (kept for the next pages) and connected.
    await page.wait_for_function("document.querySelector('home-assistant')?.hass?.user", timeout=60_000)


TAKEN: list[Path] = []


async def shoot(page: Page, path: Path) -> None:
    """Let the page settle, then take the viewport."""
    await page.wait_for_timeout(SETTLE_MS)
    await page.screenshot(path=str(path))
    TAKEN.append(path)


def shrink(paths: list[Path]) -> None:
    """Losslessly smaller files where optipng is there; say each file's size."""
    for path in paths:
        if shutil.which("optipng"):
            subprocess.run(["optipng", "-quiet", "-o2", str(path)], check=True)
        print(f"{path}: {path.stat().st_size // 1024} KB", file=sys.stderr)


async def dashboard(page: Page, url: str, out: Path) -> None:
    """The dashboard Home Assistant opens on, on the IoT platform's tab (it has archive history to chart)."""
    await page.goto(f"{url}/meter-cloud")
    await page.locator("hui-sections-view").first.wait_for(state="attached", timeout=90_000)
    view = await page.evaluate(
        "async () => (await document.querySelector('home-assistant').hass.callWS("
        "{type: 'lovelace/config', url_path: 'meter-cloud'})).views.find((v) => v.title.startsWith('IoT ')).path"
    )
    await page.goto(f"{url}/meter-cloud/{view}")
    await page.locator("statistics-chart").first.wait_for()
    await shoot(page, out / "dashboard.png")


async def config_flow(page: Page, url: str, out: Path) -> None:
    """Add integration → Meter Cloud: the vendor choice, then the KUMIR-RESURS account form; closed unsaved."""
    await page.goto(f"{url}/config/integrations/dashboard")
    await page.get_by_text("Add integration").first.click()
    await page.wait_for_timeout(1000)
    await page.keyboard.type("Meter Cloud")
    await page.get_by_text("Meter Cloud", exact=True).last.click()
    await page.get_by_text("Vendor system").wait_for()
    await shoot(page, out / "config-flow.png")
    await page.get_by_text("KUMIR-RESURS (heat").click()
    await page.get_by_role("button", name="Submit").click()
    await page.get_by_text("Nodes").first.wait_for()
    await shoot(page, out / "config-flow-account.png")
    await page.keyboard.press("Escape")


async def device(page: Page, url: str, out: Path) -> None:
    """A gas meter's device page, found by its name in the frontend's device list."""
    await page.goto(f"{url}/config/devices/dashboard")
    await page.wait_for_timeout(1000)
    device_id = await page.evaluate(
        "(name) => Object.values(document.querySelector('home-assistant').hass.devices)"
        ".find((device) => device.name === name)?.id",
        GOLDCARD_METER,
    )
    if not device_id:
        raise SystemExit(f"no device {GOLDCARD_METER!r}: is scripts/develop running with its Goldcard entry?")
    await page.goto(f"{url}/config/devices/device/{device_id}")
    await page.get_by_text(GOLDCARD_METER).first.wait_for()
    await shoot(page, out / "device.png")


async def picker_items(page: Page, tab: str, button: str) -> list[list[str]]:
    """Every row the first picker of an Energy dialog offers ([id, name, device]); the dialog is cancelled."""
    await page.get_by_text(tab, exact=True).first.click()
    await page.get_by_text(button).click()
    await page.locator("ha-statistic-picker").first.click()
    await page.wait_for_timeout(1000)
    rows: list[list[str]] = await page.evaluate(PICKER_ROWS)
    await page.keyboard.press("Escape")
    await page.get_by_role("button", name="Cancel").click()
    return rows


async def energy_picker(page: Page, url: str, out: Path) -> None:
    """Energy → Gas → Add gas source: the statistic picker, searched; the gas and grid pickers' rows printed."""
    await page.goto(f"{url}/config/energy")
    for tab, button in (("Gas", "Add gas source"), ("Electricity", "Add grid connection")):
        # Less the "Why is my entity not listed?" row (id ___missing-entity___).
        rows = [row for row in await picker_items(page, tab, button) if not row[0].startswith("___")]
        twice = [name for name, count in Counter((n, d) for _, n, d in rows).items() if count > 1]
        external = [statistic_id for statistic_id, _, _ in rows if ":" in statistic_id]
        print(
            f"{tab} picker ({button}): {len(rows)} statistics; offered twice: {twice or 'none'};"
            f" not a sensor's own: {external or 'none'}",
            file=sys.stderr,
        )
        for statistic_id, name, device in rows:
            print(f"  {name} | {device}  ({statistic_id})", file=sys.stderr)
    await page.get_by_text("Gas", exact=True).first.click()
    await page.get_by_text("Add gas source").click()
    await page.locator("ha-statistic-picker").first.click()
    await page.get_by_placeholder("Search").last.fill(PICKER_SEARCH)
    await shoot(page, out / "energy-picker.png")
    await page.keyboard.press("Escape")


async def main(args: Any) -> None:
    """Each screenshot in turn, in one logged-in browser page."""
    args.out.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport=VIEWPORT)
        await login(page, args.url)
        for take in (dashboard, config_flow, device, energy_picker):
            await take(page, args.url, args.out)
        await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser (default: Debian's chromium)")
    parser.add_argument("--url", default="http://127.0.0.1:8123", help="Home Assistant of scripts/develop")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    asyncio.run(main(parser.parse_args()))
    shrink(TAKEN)
