"""Headless-chromium helpers for the tests of generated HTML (report, leaderboard).

Chromium is a test requirement, not an optional extra: when it is missing the calling test
*fails* with the command to install it (CI installs it in ``.ci/run``), it is never skipped.

* :func:`screenshot` renders a page to a PNG (for "is it blank?" checks);
* :func:`check_page` loads a page and reports JavaScript errors, resources that failed to
  load and every image's natural size, read back from the DOM (``--dump-dom``): a probe script
  is injected at the top of a temporary copy of the page (next to it, so relative links
  resolve), records ``error`` events and ``console.error`` calls, and after ``load`` writes
  its findings as JSON into a ``<pre>`` element.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ("headless chromium is required by this test but was not found (tried "
                f"{', '.join(CANDIDATES)}); install it, e.g. `apt-get install -y --no-install-recommends chromium`")
TIMEOUT_S = 60


def find_chromium() -> str:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(INSTALL_HINT, pytrace=False)


def _run(args: list[str], page: Path) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="pb-chromium-") as profile:
        cmd = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
               *args, Path(page).resolve().as_uri()]
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT_S)


def screenshot(html_path: Path, png_path: Path, window: tuple[int, int] = (1280, 2000)) -> Path:
    """Render ``html_path`` in headless chromium to ``png_path`` and return it."""
    png_path = Path(png_path).resolve()
    png_path.unlink(missing_ok=True)
    proc = _run([f"--screenshot={png_path}", f"--window-size={window[0]},{window[1]}"], html_path)
    if proc.returncode != 0 or not png_path.is_file():
        raise AssertionError(f"chromium screenshot of {html_path} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return png_path


_PROBE = """<script>(function(){
var errs=[];window.__pbErrors=errs;
window.addEventListener('error',function(e){var t=e.target;
 if(t&&t!==window&&(t.src||t.href)){errs.push('failed to load '+String(t.src||t.href).slice(0,100));}
 else{errs.push('js error: '+e.message+' (line '+e.lineno+')');}},true);
window.addEventListener('unhandledrejection',function(e){errs.push('unhandled rejection: '+e.reason);});
var ce=console.error;console.error=function(){errs.push('console.error: '+[].join.call(arguments,' '));
 return ce.apply(console,arguments);};
window.addEventListener('load',function(){setTimeout(function(){
 var imgs=[].map.call(document.images,function(i){return {src:String(i.getAttribute('src')||'').slice(0,40),
   width:i.naturalWidth,height:i.naturalHeight,complete:i.complete};});
 var pre=document.createElement('pre');pre.id='__pb_probe';
 pre.textContent=JSON.stringify({errors:errs,images:imgs,title:document.title});
 document.body.appendChild(pre);},50);});
})();</script>"""


@dataclass
class PageCheck:
    """What a page did when loaded: JS/resource errors, and each image's src prefix and size."""

    errors: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    title: str = ""

    @property
    def broken_images(self) -> list[dict]:
        return [i for i in self.images if not i["complete"] or i["width"] == 0 or i["height"] == 0]


def check_page(html_path: Path) -> PageCheck:
    """Load ``html_path`` in headless chromium and report errors and image sizes (see module doc)."""
    html_path = Path(html_path)
    text = html_path.read_text(encoding="utf-8")
    match = re.search(r"<head[^>]*>", text, flags=re.IGNORECASE)
    at = match.end() if match else 0
    probe = html_path.with_name(f".{html_path.stem}.probe.html")
    probe.write_text(text[:at] + _PROBE + text[at:], encoding="utf-8")
    try:
        proc = _run(["--dump-dom", "--virtual-time-budget=5000"], probe)
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="__pb_probe">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    if proc.returncode != 0 or not found:
        raise AssertionError(f"chromium did not finish loading {html_path} (exit {proc.returncode}): "
                             f"{proc.stderr[-2000:]}")
    data = json.loads(html.unescape(found.group(1)))
    return PageCheck(data["errors"], data["images"], data["title"])
