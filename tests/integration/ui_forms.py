"""What the dashboard's form tests share: signing in afresh (the client's cookies are
one browser) and reading a definition editor's text area back."""

from __future__ import annotations

import html
import re

from litestar.testing import AsyncTestClient

from tests.integration.test_ui import csrf_of, sign_in

_TEXT = re.compile(r'<textarea id="definition" name="definition"[^>]*>(.*?)</textarea>', re.S)


def text_of(page: str) -> str:
    """The definition editor's text as the page holds it."""
    found = _TEXT.search(page)
    assert found, page[:3000]
    return html.unescape(found.group(1))


async def signed_in(client: AsyncTestClient, username: str, at: str = "/ui/pipelines") -> str:
    """`username` signed in with a fresh cookie jar; the CSRF token of the page `at`."""
    client.cookies.clear()
    assert (await sign_in(client, username)).status_code == 303
    return csrf_of((await client.get(at)).text)
