"""The web console (console/), in a real headless Chromium against a real stack (Envoy serves it).

Each test drives the page as a person would (clicks, typing) and waits, bounded, for what the
watch streams bring; none reloads the page after acting, so what appears came live.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select

from tests.browser import DOCS, Browser, browser
from tests.support import PROGRAM, Stack, running_stack
from tests.tokens import Tokens

CONSOLE = Path(__file__).resolve().parent.parent / "console"
MAX_BYTES = 300 * 1024

e2e = pytest.mark.e2e


@pytest.fixture
def page(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Browser]:
    with browser(f"http://127.0.0.1:{stack.rest_port}", request.node.name) as b:
        yield b


def statuses(b: Browser) -> list[str]:
    return [li.get_attribute("data-status") or "" for li in b.all("#timeline li")]


def pairs(b: Browser) -> list[tuple[str, str]]:
    """The timeline's (status, desired status) entries, oldest first."""
    return [
        (li.get_attribute("data-status") or "", li.get_attribute("data-desired") or "")
        for li in b.all("#timeline li")
    ]


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """`wanted` appears in `seen` as a subsequence (other transitions may come between)."""
    rest = iter(seen)
    return all(any(s == w for s in rest) for w in wanted)


def row(b: Browser, name: str) -> str:
    return f'#pipelines tr[data-pipeline="{name}"]'


UNLABELLED = """
return [...document.querySelectorAll('input, select, textarea, button')]
  .filter((e) => e.offsetParent !== null || e.closest('header'))
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
    && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map((e) => e.outerHTML.slice(0, 80));
"""


def assert_labelled(b: Browser) -> None:
    """Every visible control has a name a screen reader can say."""
    assert b.script(UNLABELLED) == []


def mark_page(b: Browser) -> None:
    """Marks the loaded document: `same_page` then proves no reload happened in between."""
    b.script("window.consoleTestMark = true")


def same_page(b: Browser) -> bool:
    return bool(b.script("return window.consoleTestMark === true"))


@e2e
def test_create_start_query_checkpoint_and_suspend(page: Browser, stack: Stack, name: str) -> None:
    page.open("#/new")
    page.css("#new-name").send_keys(name)
    assert_labelled(page)
    page.css("#new-description").send_keys("made in the browser test")
    program = page.css("#new-program")
    program.clear()
    program.send_keys(PROGRAM)
    page.css("#create button[type=submit]").click()
    page.wait(lambda d: d.execute_script("return location.hash") == f"#/pipelines/{name}", "page")
    assert stack.get(name)["description"] == "made in the browser test"
    page.wait(lambda d: "Success" in page.css(".statusline").text, "the program to compile")
    mark_page(page)

    # The list: start from the row, and see Running come over the watch stream.
    page.css('a[href="#/"]').click()
    page.css(row(page, name))
    page.css(f'{row(page, name)} button[data-action="start"]').click()
    page.wait(
        lambda d: page.css(row(page, name)).get_attribute("data-status") == "Running",
        "the row to show Running",
    )
    assert page.css(row(page, name)).get_attribute("data-desired") == "Running"
    assert same_page(page)
    # Neighbours for the picture in docs/: a paused pipeline and one that does not compile.
    stack.create(f"{name}-paused")
    stack.start(f"{name}-paused", initial="paused")
    bad = {"name": f"{name}-draft", "program_code": "CREATE VIEW v AS SELEC 1;"}
    assert stack.rest.post("/v0/pipelines", json=bad).status_code == 201
    page.css(f'{row(page, name + "-paused")}[data-status="Paused"]')
    page.css(f"{row(page, name + '-draft')} a.badge.bad")
    page.screenshot("list", also=DOCS / "console-list.png")
    assert_labelled(page)
    check_filters(page, name)

    # The pipeline page: rows in and out through the query box, then a checkpoint.
    page.css(f'{row(page, name)} a[href="#/pipelines/{name}"]').click()
    page.css('#timeline li[data-status="Running"]')
    run_query(page, "INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    run_query(page, "SELECT id, name FROM v ORDER BY id")
    cells = [td.text for td in page.all("#query-results tbody td")]
    assert cells == ["1", "one", "2", "two"]
    page.css('button[data-action="checkpoint"]').click()
    page.css("#checkpoints tr[data-sequence]")
    assert page.wait(lambda d: "Following" in page.css("#logs-follow ~ p").text, "the log")
    page.wait(lambda d: "Running" in page.css("#logs").text, "the runtime's log lines")

    # Stop = suspend: the timeline shows the whole way down, live.
    page.css('button[data-action="stop"]').click()
    page.wait(
        lambda d: in_order(statuses(page), ["Running", "Suspended", "Stopping", "Stopped"]),
        "Suspended -> Stopping -> Stopped in the timeline",
    )
    assert stack.get(name, "status")["deployment_status"] == "Stopped"
    assert "lasted" in page.all("#timeline li")[-2].text
    assert same_page(page)
    assert_labelled(page)
    page.script("window.scrollTo(0, 0)")
    page.screenshot("pipeline", also=DOCS / "console-pipeline.png")
    assert page.page_errors() == []


def check_filters(page: Browser, name: str) -> None:
    """The list's filters, on `name` and its two neighbours (paused, draft)."""
    Select(page.css("#filter-status")).select_by_value("Paused")
    assert shown(page, name) == [f"{name}-paused"]
    Select(page.css("#filter-status")).select_by_value("error")
    assert shown(page, name) == [f"{name}-draft"]
    Select(page.css("#filter-status")).select_by_value("")
    page.css("#filter-name").send_keys("-dra")
    assert shown(page, name) == [f"{name}-draft"]
    page.css("#filter-name").clear()
    page.css("#filter-name").send_keys(Keys.SPACE, Keys.BACKSPACE)  # an input event after clear
    assert len(shown(page, name)) == 3


def shown(page: Browser, prefix: str) -> list[str]:
    """The names of the list's visible rows that start with `prefix` (the shared stack has more)."""
    names = [
        r.get_attribute("data-pipeline") or ""
        for r in page.all("#pipelines tbody tr")
        if r.is_displayed()
    ]
    return sorted(n for n in names if n.startswith(prefix))


def run_query(page: Browser, sql: str) -> None:
    box = page.css("#query-sql")
    box.clear()
    box.send_keys(sql)
    answers = page.css("#query-answer").get_attribute("data-answers")
    page.css("form.query button[type=submit]").click()
    page.wait(
        lambda d: page.css("#query-answer").get_attribute("data-answers") != answers,
        f"the answer to {sql}",
    )
    refusals = [n.text for n in page.all("form.query + .notice") if n.is_displayed()]
    assert not refusals, refusals


@e2e
def test_a_pipeline_page_opens_on_its_recent_past(page: Browser, stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    stack.force_stop(name)
    page.open(f"#/pipelines/{name}")
    past = [
        ("Stopped", "Stopped"),
        ("Stopped", "Running"),
        ("Provisioning", "Running"),
        ("Initializing", "Running"),
        ("Running", "Running"),
        ("Running", "Stopped"),
        ("Stopping", "Stopped"),
        ("Stopped", "Stopped"),
    ]
    page.wait(lambda d: pairs(page) == past, "the transitions from before the page opened")
    assert "lasted" in page.all("#timeline li")[-2].text
    # Then live, after the past.
    assert stack.post(name, "start").status_code == 202
    page.wait(lambda d: statuses(page)[len(past) :][-1:] == ["Running"], "Running, live")
    stack.force_stop(name)


@e2e
def test_force_stop_asks_first_and_names_the_loss(page: Browser, stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    page.open(f"#/pipelines/{name}")
    page.css('#timeline li[data-status="Running"]')

    page.css('button[data-action="force-stop"]').click()
    dialog = page.css("dialog#confirm[open]")
    assert "rows ingested since the last checkpoint are lost" in dialog.text
    page.screenshot("force-stop-confirmation")
    page.driver.switch_to.active_element.send_keys(Keys.ESCAPE)  # focus starts on Cancel
    page.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog#confirm[open]"), "no dialog")
    assert stack.get(name, "status")["deployment_desired_status"] == "Running"

    # The keyboard alone: Enter on the button, Tab from Cancel to the confirmation, Enter.
    page.script("document.querySelector('button[data-action=\"force-stop\"]').focus()")
    page.driver.switch_to.active_element.send_keys(Keys.ENTER)
    page.css("dialog#confirm[open]")
    page.driver.switch_to.active_element.send_keys(Keys.TAB)
    assert page.script("return document.activeElement.id") == "confirm-ok"
    page.driver.switch_to.active_element.send_keys(Keys.ENTER)
    page.wait(lambda d: in_order(statuses(page), ["Running", "Stopping", "Stopped"]), "Stopped")
    assert "Suspended" not in statuses(page)


@e2e
def test_a_refused_action_shows_the_message_and_error_code(
    page: Browser, stack: Stack, name: str
) -> None:
    stack.create(name)
    page.open(f"#/pipelines/{name}")
    page.css('#timeline li[data-status="Stopped"]')
    page.css('button[data-action="pause"]').click()
    notice = page.css("#action-notice.error[role=alert]")
    expected = stack.post(name, "pause").json()  # the same refusal, asked directly
    assert notice.find_element(By.CSS_SELECTOR, ".message").text == expected["message"]
    assert notice.find_element(By.CSS_SELECTOR, ".error-code").text == expected["error_code"]
    page.screenshot("refused")


@e2e
def test_a_deployment_error_in_full_from_its_badge_then_dismissed(
    page: Browser, stack: Stack, name: str
) -> None:
    stack.create(name, runtime_config={"storage": None})  # nowhere to checkpoint: suspend fails
    stack.start(name)
    assert stack.post(name, "stop", force="false").status_code == 202
    error = stack.wait_status(name, "Stopped")["deployment_error"]
    assert error is not None

    page.open("#/")
    page.css(f'{row(page, name)} a.badge.bad[href="#/pipelines/{name}/error"]').click()
    section = page.css("#error .error-body .notice.error")
    assert section.find_element(By.CSS_SELECTOR, ".message").text == error["message"]
    assert section.find_element(By.CSS_SELECTOR, ".error-code").text == error["error_code"]
    assert page.script("return document.activeElement.id") == "error"
    page.screenshot("deployment-error")

    page.css('button[data-action="dismiss-error"]').click()
    page.wait(lambda d: page.css("#error").text.endswith("None."), "the error to go")
    assert stack.get(name, "status")["deployment_error"] is None


@e2e
def test_compile_errors_are_shown_at_their_line(page: Browser, stack: Stack, name: str) -> None:
    bad = "CREATE TABLE t (x INT);\nCREATE VIEW v AS SELEC x FROM t;"
    r = stack.rest.post("/v0/pipelines", json={"name": name, "program_code": bad})
    assert r.status_code == 201, r.text
    page.open(f"#/pipelines/{name}/program")
    marker = page.css("#program-section .gutter .line.err")
    assert marker.text.endswith("2")  # the second line, where SELEC is
    note = page.css("#program-section .note.err")
    assert "line 2" in note.text
    page.css("#program-diagnostics li button").click()
    position = page.script(
        "const t = document.getElementById('program');"
        "return [document.activeElement === t, t.value.slice(0, t.selectionStart).split('\\n')]"
    )
    assert position[0] is True
    assert len(position[1]) == 2  # the cursor is on line 2
    page.screenshot("compile-error")

    # Retype that line in the editor (the cursor is on it) and save: it compiles.
    editor = page.css("#program")
    editor.send_keys(Keys.HOME, Keys.SHIFT, Keys.END, Keys.NULL)
    editor.send_keys("CREATE VIEW v AS SELECT x FROM t;")
    page.css("#program-section button[type=submit]").click()
    page.wait(lambda d: "Success" in page.css(".statusline").text, "the fixed program to compile")
    assert stack.get(name)["program_code"] == bad.replace("SELEC x", "SELECT x")
    assert page.all("#program-section .gutter .line.err") == []
    assert page.all("#program-diagnostics li") == []


@e2e
def test_the_list_reconnects_by_itself_when_the_manager_restarts(
    own_stack: Stack, name: str, request: pytest.FixtureRequest
) -> None:
    own_stack.create(name)
    with browser(f"http://127.0.0.1:{own_stack.rest_port}", request.node.name) as page:
        page.open("#/")
        page.css(row(page, name))
        mark_page(page)
        conn = page.css("#conn")
        assert conn.text == "Live"

        own_stack.kill_manager()
        page.wait(lambda d: conn.get_attribute("data-outages") == "1", "the stream to be lost")
        page.screenshot("reconnecting")
        own_stack.start_manager()
        later = f"{name}-after"
        own_stack.create(later)  # made while the page was reconnecting, or just after
        page.css(row(page, later))
        page.wait(lambda d: conn.text == "Live", "the indicator to say Live again")
        assert page.css(row(page, name)).get_attribute("data-status") == "Stopped"
        assert same_page(page)

        # A pipeline page resumes its own watch (and log) the same way.
        page.go(f"#/pipelines/{name}")
        page.css('#timeline li[data-status="Stopped"]')
        own_stack.kill_manager()
        page.wait(lambda d: conn.get_attribute("data-outages") == "2", "the page's streams lost")
        own_stack.start_manager()
        page.wait(lambda d: conn.text == "Live", "the page's streams back")
        assert own_stack.post(name, "start").status_code == 202
        page.wait(lambda d: statuses(page)[-1:] == ["Running"], "Running after the restart")
        assert pairs(page)[:2] == [("Stopped", "Stopped"), ("Stopped", "Running")]  # none twice
        assert same_page(page)


@e2e
def test_a_page_opened_while_the_manager_is_down_waits_for_it(
    own_stack: Stack, name: str, request: pytest.FixtureRequest
) -> None:
    own_stack.create(name)
    own_stack.kill_manager()
    with browser(f"http://127.0.0.1:{own_stack.rest_port}", request.node.name) as page:
        page.open("#/")
        # Envoy answers 503 ManagerUnavailable: not a reason to ask for an API key.
        page.wait(lambda d: "not answering" in page.css("#main").text, "the outage to be said")
        assert page.css("#auth").get_attribute("hidden") is not None
        own_stack.start_manager()
        page.css(row(page, name))
        assert page.css("#auth").get_attribute("hidden") is not None


@e2e
def test_a_retrying_suspend_shows_its_attempts_and_last_error(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    obstacle = tmp_path / "obstacle"  # while it exists, storage refuses the final checkpoint
    env = {"STOPCOCK_RUNTIME_TEST_FAULTS": f"checkpoint_obstacle_file={obstacle}"}
    with (
        running_stack(tmp_path / "stack", env) as stack,
        browser(f"http://127.0.0.1:{stack.rest_port}", request.node.name) as page,
    ):
        stack.create("p")
        stack.start("p")
        page.open("#/pipelines/p")
        page.css('#timeline li[data-status="Running"]')
        obstacle.touch()
        page.css('button[data-action="stop"]').click()
        suspend: str = page.wait(
            lambda d: text if "attempt" in (text := page.css("#suspend").text) else "",
            "the suspend's retries",
        )
        assert "Last error" in suspend and "busy" in suspend
        page.screenshot("suspend-retrying")
        obstacle.unlink()
        page.wait(
            lambda d: in_order(statuses(page), ["Suspended", "Stopping", "Stopped"]), "Stopped"
        )
        assert page.all("#suspend") == []


# -- authentication ------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return Tokens(tmp_path_factory.mktemp("console-keys"))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, tokens: Tokens) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("console-secured"), tokens.env()) as s:
        yield s


@e2e
def test_auth_asks_for_a_key_and_a_read_key_cannot_mutate(
    secured: Stack, tokens: Tokens, request: pytest.FixtureRequest
) -> None:
    admin = {"authorization": f"Bearer {tokens.rs256()}"}
    r = secured.rest.post(
        "/v0/api_keys", json={"name": "console-read", "role": "read"}, headers=admin
    )
    assert r.status_code == 201, r.text
    read_key: str = r.json()["api_key"]
    r = secured.rest.post(
        "/v0/pipelines", json={"name": "guarded", "program_code": PROGRAM}, headers=admin
    )
    assert r.status_code == 201, r.text

    with browser(f"http://127.0.0.1:{secured.rest_port}", request.node.name) as page:
        page.open("#/")
        error = page.css("#auth-error")
        assert "AuthenticationFailed" in error.text  # no key yet: the 401, plainly
        page.css("#api-key").send_keys("apikey:" + "x" * 128, Keys.ENTER)
        page.wait(lambda d: "401" in page.css("#auth-error").text, "401 for a bad key")
        assert "AuthenticationFailed" in page.css("#auth-error").text
        page.screenshot("bad-key")

        page.css("#api-key").send_keys(read_key, Keys.ENTER)
        page.css(f"{row(page, 'guarded')}")
        assert page.css("#role").text == "Role: read"
        buttons = page.all(f"{row(page, 'guarded')} button[data-action]")
        assert buttons and all(not b.is_enabled() for b in buttons)
        assert page.css('a.button[href="#/new"]').get_attribute("aria-disabled") is not None
        page.go("#/pipelines/guarded")
        page.css('#timeline li[data-status="Stopped"]')
        assert all(not b.is_enabled() for b in page.all("button[data-mutating]"))
        page.screenshot("read-only")
        assert read_key not in page.driver.current_url
        assert all(read_key not in str(entry) for entry in page.log())


# -- the files themselves (no browser, no process) -------------------------------


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_scripts = 0
        self.inline_attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag == "script" and not found.get("src"):
            self.inline_scripts += 1
        self.inline_attrs += [k for k, _ in attrs if k == "style" or k.startswith("on")]


def test_console_is_small_and_self_contained() -> None:
    files = [p for p in CONSOLE.iterdir() if p.is_file()]
    assert all(p.parent == CONSOLE for p in CONSOLE.rglob("*")), "console/ stays flat"
    assert sum(p.stat().st_size for p in files) <= MAX_BYTES

    html = _Assets()
    html.feed((CONSOLE / "index.html").read_text())
    # Only local files (the console's own, or the page's own routes); the CSP allows no others.
    for ref in html.refs:
        assert re.fullmatch(r"/console/[\w.-]+|#[\w/-]*|data:,", ref), ref
        if ref.startswith("/console/"):
            assert (CONSOLE / ref.removeprefix("/console/")).is_file(), ref
    assert html.inline_scripts == 0
    assert html.inline_attrs == []

    for module in CONSOLE.glob("*.js"):
        source = module.read_text()
        for target in re.findall(r"from '([^']+)'", source):
            assert re.fullmatch(r"\./[\w-]+\.js", target), (module.name, target)
            assert (CONSOLE / target[2:]).is_file(), (module.name, target)
        # No markup from strings (API text is never parsed as HTML), and nothing logged.
        assert "innerHTML" not in source and "console.log" not in source, module.name


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_status_colours_have_enough_contrast_in_both_schemes() -> None:
    """WCAG AA (4.5:1) for every badge, notice and text colour pair, light and dark."""
    css = (CONSOLE / "console.css").read_text()
    schemes = re.findall(r":root \{([^}]*)\}", css)
    assert len(schemes) == 2  # light, then the prefers-color-scheme: dark override
    for scheme in schemes:
        colours = dict(re.findall(r"--([\w-]+): (#[0-9a-f]{6})", scheme))
        checked = [(f"{k}-fg", f"{k}-bg") for k in ("ok", "bad", "moving", "paused", "idle")]
        checked += [("fg", "bg"), ("muted", "bg"), ("muted", "panel"), ("link", "bg")]
        checked += [("danger", "bg"), ("danger", "panel"), ("on-accent", "focus")]
        for fg, bg in checked:
            ratio = contrast(colours[fg], colours[bg])
            assert ratio >= 4.5, (fg, bg, round(ratio, 2))
