"""The dashboard crawled in a real browser, each page checked for accessibility: axe-core
(vendored under tests/e2e/vendor/) with the WCAG 2.1 A and AA rules, colour contrast
included; no sideways scrolling at 375 px and 1280 px; every visible link, button and
field reached by the Tab key, none taken out of the tab order, every field named.

The crawl follows the links it finds, so a page added later is checked without changing
the test: from a start page, every same-origin GET link under /ui/ and every GET form
submitted as it stands (never /ui/logout, never static files), one page per route
pattern (ids and numbers replaced, query keys kept), at most MAX_PAGES."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.e2e.ui_browser_support import WIDTHS, shoot_at

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
MAX_PAGES = 40
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
FAILING_IMPACTS = ("serious", "critical")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_NUMBER = re.compile(r"(?<=/)\d+(?=/|$)")
# Not pages: signing out ends the session the crawl needs; static files. (A stream or a
# download linked from a page is opened and skipped: it is not text/html.)
_NOT_PAGES = re.compile(r"^/ui/(logout|static/)")

# Where the page leads by GET: its links, and its GET forms submitted as they stand (a
# search, a filter, a page a form opens such as a comparison of two revisions).
_LINKS = """() => [...document.querySelectorAll('a[href]')].map(a => a.href).concat(
  [...document.querySelectorAll('form')].filter(f => f.method === 'get').map(f => {
    const url = new URL(f.action);
    for (const [key, value] of new FormData(f)) url.searchParams.append(key, value);
    return url.href;
  }))"""

_RUN_AXE = """async (tags) => {
  const result = await axe.run(document, {
    runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
}"""

# Visible, enabled links, buttons and fields, each described by what stays the same when
# the page swaps a fragment in (the run page's live state): tag, id, name, href, label.
_INTERACTIVE = """() => {
  const selector = 'a[href], button, input:not([type=hidden]), select, textarea, summary,'
    + ' [tabindex], [contenteditable=true]';
  const describe = (el) => [el.tagName.toLowerCase(), el.id && '#' + el.id,
    el.getAttribute('name'), el.getAttribute('href'), el.getAttribute('aria-label'),
    el.closest('form') && el.closest('form').getAttribute('action'),
    (el.innerText || el.value || '').trim().slice(0, 40)].filter(Boolean).join(' ');
  const named = (el) => Boolean(el.getAttribute('aria-label')
    || el.getAttribute('aria-labelledby') || el.closest('label')
    || (el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]'))
    || el.getAttribute('title'));
  const found = [];
  for (const el of document.querySelectorAll(selector)) {
    if (el.disabled || !el.checkVisibility({visibilityProperty: true})) continue;
    const field = ['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName);
    const radio = el.type === 'radio' ? 'radio ' + el.name : null;
    found.push({key: radio || describe(el), tabindex: el.getAttribute('tabindex'),
      unnamed: field && !named(el)});
  }
  return found;
}"""

_FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  if (el.type === 'radio') return 'radio ' + el.name;
  return [el.tagName.toLowerCase(), el.id && '#' + el.id, el.getAttribute('name'),
    el.getAttribute('href'), el.getAttribute('aria-label'),
    el.closest('form') && el.closest('form').getAttribute('action'),
    (el.innerText || el.value || '').trim().slice(0, 40)].filter(Boolean).join(' ');
}"""


def route_pattern(url: str) -> str:
    """'/ui/runs/<uuid>?status=failed' -> '/ui/runs/{id}?status': one page per pattern."""
    parts = urlsplit(url)
    path = _NUMBER.sub("{n}", _UUID.sub("{id}", parts.path.rstrip("/") or "/"))
    keys = sorted({key for key, _ in parse_qsl(parts.query, keep_blank_values=True)})
    return path + ("?" + "&".join(keys) if keys else "")


@dataclass
class Crawl:
    base: str
    screenshots: bool = True  # kept under .artifacts/ui-screenshots/, named by pattern
    checked: list[str] = field(default_factory=list)  # patterns, in crawl order
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # minor axe findings, non-pages

    def link_wanted(self, url: str, seen: set[str]) -> bool:
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.base or not parts.path.startswith("/ui/"):
            return False
        return not _NOT_PAGES.search(parts.path) and route_pattern(url) not in seen

    async def run(self, page: Any, *starts: str, skip: Iterable[str] = ()) -> None:
        """Check `starts` and every page reachable from them whose pattern is not in
        `skip` (those another crawl has checked already). A route's first instance is
        the one checked: name a richer one (a pipeline with revisions to compare) as a
        start to have it checked, and the pages only it links to."""
        seen = set(skip) | {route_pattern(start) for start in starts}
        queue = list(starts)
        while queue and len(self.checked) < MAX_PAGES:
            url = queue.pop(0)
            if not await self.visit(page, url):
                continue
            links = await page.evaluate(_LINKS)
            for link in links:
                link = link.split("#")[0]
                if self.link_wanted(link, seen):
                    seen.add(route_pattern(link))
                    queue.append(link)
        if queue:  # never a page silently left out: raise the cap
            self.problems.append(f"stopped at MAX_PAGES={MAX_PAGES}; not checked: {queue}")

    async def visit(self, page: Any, url: str, expect_status: int = 200, name: str = "") -> bool:
        """Open `url` and check it (named `name`, else by its pattern); False when it is
        not an HTML page (a download, a stream), which is not checked."""
        pattern = name or route_pattern(url)
        try:
            response = await page.goto(url, wait_until="commit")
        except Exception as failed:  # a download is not a page
            if "Download is starting" in str(failed):
                self.notes.append(f"{pattern}: a download, not checked")
                return False
            raise
        if "text/html" not in (response.headers.get("content-type") or ""):
            self.notes.append(f"{pattern}: {response.headers.get('content-type')}, not checked")
            return False
        await page.wait_for_load_state("load")
        if response.status != expect_status:
            self.problems.append(f"{pattern}: status {response.status} ({url})")
        await self.check(page, pattern)
        return True

    async def check(self, page: Any, pattern: str) -> None:
        """axe at each width (what wraps, scrolls or overlaps differs), the sideways
        scroll and a screenshot at each, then the keyboard at 1280 px."""
        self.checked.append(pattern)
        await page.add_script_tag(path=str(AXE))
        found: dict[tuple[str, str], list[int]] = {}  # (impact, finding) -> widths
        for width in WIDTHS:
            overflow = await shoot_at(page, pattern, width, self.screenshots)
            if overflow:
                self.problems.append(overflow)
            for v in await page.evaluate(_RUN_AXE, WCAG_TAGS):
                line = f"{pattern}: {v['impact']} {v['id']} ({v['help']}) at {v['targets']}"
                found.setdefault((v["impact"], line), []).append(width)
        for (impact, line), widths in found.items():
            failing = impact in FAILING_IMPACTS
            (self.problems if failing else self.notes).append(f"{line} at {widths} px")
        await page.set_viewport_size({"width": 1280, "height": 900})
        self.problems.extend(await self.keyboard(page, pattern))

    async def keyboard(self, page: Any, pattern: str) -> list[str]:
        """Tab from the top of the page through to its end: every visible interactive
        element must take the focus once."""
        elements = await page.evaluate(_INTERACTIVE)
        problems = [
            f"{pattern}: field without an accessible name: {e['key']}"
            for e in elements
            if e["unnamed"]
        ]
        problems += [
            f"{pattern}: out of the tab order (tabindex=-1): {e['key']}"
            for e in elements
            if e["tabindex"] is not None and e["tabindex"].strip().startswith("-")
        ]
        wanted = {e["key"] for e in elements}
        await page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")
        reached: list[str] = []
        for _ in range(len(elements) + 3):
            await page.keyboard.press("Tab")
            focused = await page.evaluate(_FOCUSED)
            if focused is None or (reached and focused == reached[0]):
                if reached:
                    break  # past the last element (or round to the first again)
                continue
            reached.append(focused)
        missed = sorted(wanted - set(reached))
        if missed:
            problems.append(f"{pattern}: not reached by Tab: {missed}")
        return problems
