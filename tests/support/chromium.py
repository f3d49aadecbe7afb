"""A headless Chromium (Debian's `chromium`) that renders one page and reaches nothing but
127.0.0.1: tests/gateway/test_docs_offline.py and test_browser_cors.py drive it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = "`apt-get install chromium` (Debian; .ci/run installs it)"


async def rendered(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, every host but 127.0.0.1 unreachable."""
    assert CHROMIUM is not None, f"no Chromium to render {url} in: {MISSING}"
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        f"--user-data-dir={profile}",
        # No CDN can answer: any name resolves to nothing, except the gateway's address.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    return out.decode(errors="replace")
