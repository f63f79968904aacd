"""The sidebar of a dashboard opened straight at a page, on a server's first load: the titled navigation of
dashboard.py (st.navigation), never Streamlit's list of the files in pages/ (which it discovers on its own)."""
from test_browser import browser, server  # noqa: F401  (fixtures: Chromium, a dashboard server on a free port)

TITLES = ["Launch", "Runs", "Studies", "Training curves", "Error vs depth", "Report"]
FILE_NAMES = ["dashboard", "common", "curves", "launch", "depth"]   # what the file list shows


def sidebar_links(page) -> list[str]:
    return [t.strip() for t in page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()]


def test_first_load_at_studies_shows_the_titled_navigation(browser, server):  # noqa: F811
    url, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "/studies")
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.get_by_text("Training curves").wait_for(timeout=120000)
    page.get_by_role("heading").first.wait_for(timeout=120000)   # the page itself has run
    page.wait_for_timeout(2000)
    links = sidebar_links(page)
    assert all(any(title in link for link in links) for title in TITLES), links
    assert not [link for link in links if link in FILE_NAMES], links
    # a second page load (after the server's first) shows the same menu
    page.goto(url + "/curves")
    nav.get_by_text("Studies").wait_for(timeout=120000)
    page.wait_for_timeout(2000)
    assert not [link for link in sidebar_links(page) if link in FILE_NAMES], sidebar_links(page)
