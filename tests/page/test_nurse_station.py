"""The nurse station page (docs/interfaces.md, section 4) in Debian's Chromium against the real
service process, found by role and accessible name as a nurse or a screen reader would.

Each test names the rules it shows (docs/clinical-rules.md)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import pytest
from page_env import free_port, opened, screenshot, signed_in, tile
from playwright.async_api import Browser, Locator, Page, expect
from service_process import HOUR, TOKENS, Service
from tcp_proxy import TcpProxy

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="module")]


def region(page: Page, pump_id: str) -> Locator:
    """The pump's detail region (open it first: `opened`)."""
    return page.get_by_role("region", name=pump_id, exact=True)


@asynccontextmanager
async def through_proxy(service: Service, browser: Browser) -> AsyncIterator[Proxied]:
    """A nurse's page reaching the service through a TCP proxy the test can cut or freeze,
    live, with the page's reloads counted (there must be none)."""
    proxy = TcpProxy(port=free_port(), target=service.port)
    await proxy.open()
    try:
        page = await signed_in(browser, service, "nurse", url=f"http://127.0.0.1:{proxy.port}")
        await opened(page, "pump-1")
        loads: list[int] = []
        page.on("load", lambda _: loads.append(1))
        live = page.locator("#live")
        await expect(live).to_have_text(re.compile(r"^Live: data \d+ s old$"))
        yield Proxied(page, proxy, live, loads)
    finally:
        await proxy.cut()


@dataclass
class Proxied:
    page: Page
    proxy: TcpProxy
    live: Locator
    loads: list[int]


async def report_reaction(page: Page, pump_id: str, grade: int, *signs: str) -> None:
    await (await opened(page, pump_id)).get_by_role("button", name="Report reaction").click()
    dialog = page.get_by_role("dialog", name=f"Report reaction on {pump_id}")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("radio", name=f"Grade {grade}", exact=True).check()
    for sign in signs:
        await dialog.get_by_role("checkbox", name=sign, exact=True).check()
    await dialog.get_by_role("button", name="Stop pump and report").click()


async def test_i1_i2_nurse_reports_grade_2_at_150_then_resumes_at_75(
    service: Service, browser: Browser
) -> None:
    """I1: the reaction stops the pump first; I2: grade 2 resumes at half the rate (75 ml/h)
    once the nurse has seen the preview; the chart marks the reaction."""
    infusion = await service.running("pump-1", "MRN-0001", hours=2)
    assert (await service.pump("pump-1"))["rate_ml_h"] == 150  # L1: 50, 100, 150
    page = await signed_in(browser, service, "nurse")
    pump = await opened(page, "pump-1")
    await expect(pump).to_contain_text("150 ml/h")
    await expect(pump).to_contain_text("Running")
    await screenshot(page, "room-running")

    await report_reaction(page, "pump-1", 2, "Other")
    await expect(pump.get_by_role("status")).to_have_text(re.compile(r"Stop confirmed in \d+ ms"))
    stopped = await service.pump("pump-1")
    assert stopped["state"] != "running"
    assert stopped["rate_ml_h"] == 0 or stopped["state"] == "stopped"
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert view["state"] == "paused"
    assert [r["grade"] for r in view["reactions"]] == [2]
    rate_shown = pump.get_by_role("definition").filter(has_text="ml/h").first
    await expect(rate_shown).to_have_text(re.compile(r"^0 ml/h, pump (stopped|paused)"))
    marks = pump.locator("svg .reaction-mark")
    await expect(marks).to_have_count(1)
    await expect(marks.locator("title")).to_have_text(re.compile("Reaction grade 2"))
    await expect(pump.get_by_role("img")).to_have_attribute(
        "aria-label", re.compile("1 reaction marked")
    )
    await screenshot(page, "room-reaction")

    await pump.get_by_role("button", name="Resume").click()
    dialog = page.get_by_role("dialog", name="Resume on pump-1")
    await expect(dialog).to_contain_text("The rules give 75 ml/h (I2)")
    await dialog.get_by_role("button", name="Resume at 75 ml/h").click()
    await expect(dialog).to_be_hidden()
    await expect(pump.get_by_role("status")).to_have_text("Resumed at 75 ml/h")
    await expect(pump.get_by_role("definition").filter(has_text="75 ml/h")).to_have_count(1)
    resumed = await service.pump("pump-1")
    assert (resumed["state"], resumed["rate_ml_h"]) == ("running", 75)
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a_resume_the_rules_refuse_shows_the_rule_and_its_words(
    service: Service, browser: Browser
) -> None:
    """I5: after a grade 3 reaction the preview names the rule that refuses a resume; the
    page offers no way round it."""
    await service.running("pump-1", "MRN-0002", hours=1)
    page = await signed_in(browser, service, "nurse")
    await report_reaction(page, "pump-1", 3, "Other")
    pump = await opened(page, "pump-1")
    await expect(pump.get_by_role("status")).to_have_text(re.compile(r"Stop confirmed in \d+ ms"))
    await expect(pump).to_contain_text("observation")
    await pump.get_by_role("button", name="Resume").click()
    dialog = page.get_by_role("dialog", name="Resume on pump-1")
    await expect(dialog).to_contain_text(re.compile(r"Resume refused \(I5\): \S"))
    await expect(dialog.get_by_role("button", name=re.compile("^Resume at"))).to_be_hidden()
    await dialog.get_by_role("button", name="Cancel").click()
    assert (await service.pump("pump-1"))["state"] != "running"


async def test_a_viewer_sees_the_room_but_no_action(service: Service, browser: Browser) -> None:
    """Roles (interfaces.md, section 3): a viewer reads; nothing a viewer may not do is
    offered (the room's tiles and "Back to the room" only open and close a pump's detail)."""
    await service.running("pump-1", "MRN-0003", hours=1)
    page = await signed_in(browser, service, "viewer")
    pump = await opened(page, "pump-1")
    await expect(pump).to_contain_text("100 ml/h")
    await expect(pump.get_by_role("img")).to_be_visible()
    await expect(pump.get_by_role("button")).to_have_count(0)
    main_buttons = page.get_by_role("main").get_by_role("button")
    await expect(main_buttons).to_have_count(3)  # two tiles and "Back to the room"
    await expect(main_buttons.filter(has_text="Back to the room")).to_have_count(1)
    await expect(page.locator("#overview .tile")).to_have_count(2)
    await expect(page.get_by_role("button", name="New patient")).to_be_hidden()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def test_a_nurse_is_not_offered_what_only_a_clinician_may_do(
    service: Service, browser: Browser
) -> None:
    """L7 hold, new patient, new infusion and start belong to the clinician's row; the
    clinician holds and releases the escalation from the page."""
    infusion = await service.running("pump-1", "MRN-0004", hours=1)
    nurse = await signed_in(browser, service, "nurse")
    await expect(
        (await opened(nurse, "pump-1")).get_by_role("button", name="Report reaction")
    ).to_be_visible()
    for name in ("Hold escalation", "New infusion", "New patient", "Start"):
        await expect(nurse.get_by_role("button", name=name, exact=True)).to_have_count(0)
    clinician = await signed_in(browser, service, "clinician")
    await expect(
        (await opened(clinician, "pump-2")).get_by_role("button", name="New infusion")
    ).to_be_visible()
    pump = await opened(clinician, "pump-1")
    await pump.get_by_role("button", name="Hold escalation").click()
    await expect(pump.get_by_role("status")).to_have_text("Escalation held (L7)")
    await expect(pump).to_contain_text("escalation held (L7)")
    assert (await service.api("GET", f"/infusions/{infusion}", "viewer"))["held"] is True
    await pump.get_by_role("button", name="Release hold").click()
    await expect(pump.get_by_role("status")).to_have_text("Hold released (L7)")
    await expect(pump.get_by_role("button", name="Hold escalation")).to_be_visible()
    assert (await service.api("GET", f"/infusions/{infusion}", "viewer"))["held"] is False


async def test_a_clinician_plans_and_starts_an_infusion_from_the_page(
    service: Service, browser: Browser
) -> None:
    """New patient, new infusion (the plan, L3/L4) and start behind the premedication gate
    (D3), all through the page."""
    page = await signed_in(browser, service, "clinician")
    await page.get_by_role("button", name="New patient").click()
    dialog = page.get_by_role("dialog", name="New patient")
    await dialog.get_by_label("MRN").fill("MRN-0005")
    await dialog.get_by_label("Weight (kg)").fill("72.5")
    await dialog.get_by_role("button", name="Create patient").click()
    await expect(page.get_by_role("main").get_by_role("status").first).to_contain_text(
        "Patient 1 created (MRN MRN-0005)"
    )
    pump = await opened(page, "pump-2")
    await pump.get_by_role("button", name="New infusion").click()
    dialog = page.get_by_role("dialog", name="New infusion on pump-2")
    await dialog.get_by_label("Patient id").fill("1")
    await dialog.get_by_role("button", name="Plan infusion").click()
    await expect(pump.get_by_role("status")).to_contain_text("Infusion 1 planned: row first")
    await expect(pump).to_contain_text("Planned, not started")

    await pump.get_by_role("button", name="Start").click()
    dialog = page.get_by_role("dialog", name="Start infusion on pump-2")
    await dialog.get_by_role("button", name="Start infusion").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("(D3)")  # no premedication yet
    await dialog.get_by_label("Premedication given, minutes before now").fill("45")
    await dialog.get_by_role("button", name="Start infusion").click()
    await expect(dialog).to_be_hidden()
    await expect(pump.get_by_role("status")).to_have_text("Started at 50 ml/h")
    await service.advance(1)
    assert (await service.pump("pump-2"))["rate_ml_h"] == 50


async def test_a_change_made_through_the_api_appears_without_a_reload(
    service: Service, browser: Browser
) -> None:
    """Live events: another pump's reaction, reported through the API, shows up by itself."""
    await service.running("pump-1", "MRN-0006", hours=1)
    other = await service.running("pump-2", "MRN-0007", hours=0)
    page = await signed_in(browser, service, "nurse")
    pump2 = await opened(page, "pump-2")
    await expect(pump2).to_contain_text("Running")
    loads = []
    page.on("load", lambda _: loads.append(1))
    answer = await service.api(
        "POST", f"/infusions/{other}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201
    )
    assert answer["stop"] == "confirmed"
    await expect(pump2).to_contain_text("Paused")
    await expect(pump2.locator("svg .reaction-mark")).to_have_count(1)
    await expect(pump2.get_by_role("button", name="Resume")).to_be_visible()
    # the other pump, on its tile in the room, beside the open detail
    await expect(tile(page, "pump-1")).to_contain_text("Running")
    await service.advance(HOUR)  # the clinical clock moves: the page follows the service's
    await expect(tile(page, "pump-1")).to_contain_text("150 ml/h")
    pump1 = await opened(page, "pump-1")
    await expect(pump1).to_contain_text("150 ml/h")
    assert loads == []


async def test_a3_the_page_shows_a_stop_that_was_not_confirmed(
    service: Service, browser: Browser
) -> None:
    """A3: with the simulator's `no_reply` fault the stop cannot be confirmed; the region
    says so in words, prominently, and a resume is not offered as a way out."""
    await service.running("pump-1", "MRN-0008", hours=1)
    page = await signed_in(browser, service, "nurse")
    await service.api(
        "POST", "/sim/pumps/pump-1/faults", "admin", {"fault": "no_reply", "value": True}
    )
    await report_reaction(page, "pump-1", 2, "Bronchospasm")
    alert = (await opened(page, "pump-1")).get_by_role("alert").filter(has_text="clamp the line")
    await expect(alert).to_have_text("⚠ A3: Pump did not stop: clamp the line")
    # the page says what the pump last reported, not what the infusion's state suggests
    await expect(region(page, "pump-1")).to_contain_text("the stop is NOT confirmed (A3)")
    await screenshot(page, "room-alarm")
    await expect(region(page, "pump-1").get_by_role("status")).to_have_count(0)
    # no way out but the clamp: no resume, no clearing of the A3 alarm while the stop is open
    await expect(region(page, "pump-1").get_by_role("button", name="Resume")).to_have_count(0)
    not_stopped = region(page, "pump-1").get_by_role("listitem").filter(has_text="clamp the line")
    await expect(not_stopped).to_have_count(1)
    await expect(not_stopped.get_by_role("button", name="Clear alarm")).to_have_count(0)
    # the pump answers nothing: the age of its last contact keeps growing on the page
    await expect(region(page, "pump-1").locator(".link")).to_have_text(
        re.compile(r"last contact ([3-9]|\d{2,})(\.\d)? s ago")
    )
    await service.api("DELETE", "/sim/pumps/pump-1/faults/no_reply", "admin")
    # the stop is sent again on the next contact and confirmed: the alert goes, the latched
    # alarm stays until a nurse clears it (A1), and clearing it never starts the pump
    await service.advance(1)
    pump = await opened(page, "pump-1")
    await expect(pump.get_by_role("alert").filter(has_text="clamp the line")).to_have_count(0)
    await expect(pump.get_by_role("status")).to_have_text(
        "The pump has now confirmed the stop (A3)"
    )
    clear = pump.get_by_role("list", name="Alarms").get_by_role("button", name="Clear alarm")
    while shown := await clear.count():
        await clear.first.click()
        await expect(pump.get_by_role("status")).to_contain_text("cleared (A1)")
        # the page has re-read the alarms before the next one is counted and clicked
        await expect(clear).to_have_count(shown - 1)
    await expect(pump.get_by_role("list", name="Alarms")).to_have_count(0)
    assert (await service.pump("pump-1"))["state"] != "running"


async def test_keyboard_alone_reports_a_reaction(service: Service, browser: Browser) -> None:
    """Every action by Tab and Enter: sign in, open the pump's detail from its tile (Escape
    closes it and gives the focus back to the tile), open the dialog, choose grade and sign,
    stop."""
    await service.running("pump-1", "MRN-0009", hours=1)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(service.url + "/")
    await expect(page.get_by_label("User name")).to_be_focused()
    await page.keyboard.press("Tab")  # the password
    await page.keyboard.press("Tab")  # an access token instead
    await expect(page.get_by_label("Access token")).to_be_focused()
    await page.keyboard.type(TOKENS["nurse"])
    await page.keyboard.press("Enter")
    await expect(tile(page, "pump-1")).to_be_visible()

    async def tab_to(target: Locator) -> None:
        for _ in range(60):
            await page.keyboard.press("Tab")
            if await target.evaluate("el => el === document.activeElement"):
                outline = await target.evaluate("el => getComputedStyle(el).outlineStyle")
                assert outline != "none", "focus must be visible"
                return
        raise AssertionError(f"Tab never reached {target}")

    await tab_to(tile(page, "pump-1"))
    await page.keyboard.press("Enter")
    await expect(region(page, "pump-1").get_by_role("heading", name="pump-1")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(region(page, "pump-1")).to_have_count(0)
    await expect(tile(page, "pump-1")).to_be_focused()
    await page.keyboard.press("Enter")
    await tab_to(region(page, "pump-1").get_by_role("button", name="Report reaction"))
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Report reaction on pump-1")
    await expect(dialog.get_by_role("radio", name="Grade 1")).to_be_focused()
    await page.keyboard.press("ArrowDown")  # the radio group: Grade 2
    await expect(dialog.get_by_role("radio", name="Grade 2")).to_be_checked()
    await tab_to(dialog.get_by_role("checkbox", name="Other"))
    await page.keyboard.press("Space")
    await tab_to(dialog.get_by_role("button", name="Stop pump and report"))
    await page.keyboard.press("Enter")
    await expect(region(page, "pump-1").get_by_role("status")).to_have_text(
        re.compile(r"Stop confirmed in \d+ ms")
    )
    assert (await service.pump("pump-1"))["state"] != "running"


async def test_at_768_px_nothing_scrolls_sideways_and_text_is_16_px_or_more(
    service: Service, browser: Browser
) -> None:
    await service.running("pump-1", "MRN-0010", hours=1)
    page = await signed_in(browser, service, "clinician", width=768)
    await expect(tile(page, "pump-1")).to_contain_text("100 ml/h")
    await expect(tile(page, "pump-2")).to_be_visible()
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    pump = await opened(page, "pump-1")  # over the tiles at this width
    await expect(pump).to_contain_text("100 ml/h")
    await expect(tile(page, "pump-2")).to_be_hidden()
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    await pump.get_by_role("button", name="Report reaction").click()
    await expect(page.get_by_role("dialog")).to_be_visible()
    dialog_box = await page.get_by_role("dialog").bounding_box()
    assert dialog_box is not None
    assert dialog_box["x"] >= 0
    assert dialog_box["x"] + dialog_box["width"] <= 768
    smallest = await page.evaluate(
        """() => Math.min(...[...document.querySelectorAll('body *')]
            .filter(el => !el.closest('svg') && el.offsetParent !== null
                    && [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
            .map(el => parseFloat(getComputedStyle(el).fontSize)))"""
    )
    assert smallest >= 16, smallest


async def test_aria_snapshot_pins_one_pumps_controls(service: Service, browser: Browser) -> None:
    """The accessible names and roles of one pump's region and of the reaction dialog are part
    of the interface (interfaces.md, section 4)."""
    await service.running("pump-1", "MRN-0011", hours=2)
    page = await signed_in(browser, service, "nurse")
    await expect(await opened(page, "pump-1")).to_match_aria_snapshot(
        r"""
        - region "pump-1":
          - heading "pump-1" [level=2]
          - paragraph: /Link up, last contact [\d.]+ s ago/
          - term: Patient
          - definition: MRN MRN-0011 (patient 1)
          - term: Infusion
          - definition: Infusion 1, row first
          - term: State
          - definition: Running
          - term: Rate
          - definition: 150 ml/h, pump running
          - term: Given
          - definition: /[\d.,]+ ml of 1,000 ml bag/
          - term: Next step
          - definition: /in .+ \(at \d\d:\d\d\)/
          - term: Time left
          - definition: /about \d+ h \d\d min/
          - term: Bag expires
          - definition: /at \d\d:\d\d \(in \d+ h \d\d min\)/
          - figure "Rate chart":
            - img /Rate over time for infusion 1. .* 0 reactions marked. now at 2 h 00 min/
          - button "Report reaction"
          - button "Stop infusion"
        """
    )
    await region(page, "pump-1").get_by_role("button", name="Report reaction").click()
    await expect(page.get_by_role("dialog")).to_match_aria_snapshot(
        r"""
        - dialog "Report reaction on pump-1":
          - heading "Report reaction on pump-1" [level=2]
          - group "Grade (CTCAE)":
            - radio "Grade 1"
            - text: Grade 1 Mild, transient; no interruption or intervention needed
            - radio "Grade 2"
            - radio "Grade 3"
            - radio "Grade 4"
          - group "Signs":
            - checkbox "Laryngeal edema"
            - checkbox "Bronchospasm"
            - checkbox "Other"
          - spinbutton "Onset, minutes before now (leave empty for now)"
          - button "Stop pump and report"
          - button "Cancel"
        """
    )


async def test_the_token_is_asked_once_per_tab_and_a_401_brings_the_sign_in_back(
    service: Service, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(service.url + "/")
    await page.get_by_label("Access token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("did not accept the token")
    await expect(page.get_by_role("region", name="pump-1")).to_have_count(0)

    await page.get_by_label("Access token").fill(TOKENS["nurse"])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("Signed in as nina (nurse)")).to_be_visible()
    await page.reload()  # the same tab keeps its token
    await expect(page.get_by_text("Signed in as nina (nurse)")).to_be_visible()
    assert await page.evaluate("localStorage.length") == 0  # never beyond the tab

    fresh = await browser.new_context()  # another browser's tab: asked again
    other = await fresh.new_page()
    await other.goto(service.url + "/")
    await expect(other.get_by_label("Access token")).to_be_visible()
    await fresh.close()

    # the token stops working (revoked): the next answer is a 401 and the sign-in is back
    await page.evaluate("sessionStorage.setItem('pumpctl.token', 'revoked')")
    await page.reload()
    await expect(page.get_by_label("Access token")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("sign in again")


async def test_the_page_says_when_it_is_disconnected_and_catches_up_with_last_event_id(
    service: Service, browser: Browser
) -> None:
    """A stale page is a hazard: while the network between page and service is cut the page
    says so and shows its data's age; once it is back the page reconnects by itself with
    Last-Event-ID and shows what happened meanwhile, without a reload."""
    infusion = await service.running("pump-1", "MRN-0012", hours=1)
    async with through_proxy(service, browser) as proxied:
        page, proxy, live, loads = proxied.page, proxied.proxy, proxied.live, proxied.loads
        # an event seen live first, so that the page has an id to resume from
        await service.api("POST", f"/infusions/{infusion}/hold", "clinician")
        await expect(region(page, "pump-1")).to_contain_text("escalation held (L7)")
        await proxy.cut()
        await expect(live).to_have_text(
            re.compile(r"Disconnected from the service: reconnecting… \(data \d+ s old\)")
        )
        reaction = {"grade": 1, "signs": ["other"]}
        await service.api("POST", f"/infusions/{infusion}/reactions", "nurse", reaction, 201)
        await expect(region(page, "pump-1")).to_contain_text("Running")  # it cannot know yet
        seen = len(proxy.heads)
        await proxy.open()
        await expect(live).to_have_text(re.compile(r"^Live: "))
        await expect(region(page, "pump-1")).to_contain_text("Paused")
        resumed = [h for h in proxy.heads[seen:] if h.startswith(b"GET /api/v1/events ")]
        assert resumed, "the page did not reconnect to the live events"
        assert re.search(rb"(?im)^last-event-id: \d+", resumed[0]), resumed[0]
        assert loads == []


async def test_a_connection_gone_silent_is_dropped_and_said_then_opened_again(
    service: Service, browser: Browser
) -> None:
    """A network that drops packets and closes nothing: no ping arrives, so the page gives the
    connection up after 2.4 pings of silence and says it is disconnected; once packets flow
    again it is live again and shows what happened meanwhile, without a reload."""
    infusion = await service.running("pump-1", "MRN-0018", hours=1)
    async with through_proxy(service, browser) as proxied:
        page, proxy, live, loads = proxied.page, proxied.proxy, proxied.live, proxied.loads
        proxy.freeze()
        await expect(live).to_contain_text("Disconnected from the service", timeout=30_000)
        reaction = {"grade": 1, "signs": ["other"]}
        await service.api("POST", f"/infusions/{infusion}/reactions", "nurse", reaction, 201)
        proxy.thaw()
        await expect(live).to_have_text(re.compile(r"^Live: data \d+ s old$"), timeout=30_000)
        await expect(region(page, "pump-1")).to_contain_text("Paused", timeout=30_000)
        assert loads == []


async def test_i4_bronchospasm_needs_symptoms_resolved_before_the_resume(
    service: Service, browser: Browser
) -> None:
    """I4: after grade 2 bronchospasm the preview refuses naming I4 until the nurse marks the
    symptoms resolved; then it gives half the rate (I2)."""
    await service.running("pump-1", "MRN-0013", hours=1)
    page = await signed_in(browser, service, "nurse")
    await report_reaction(page, "pump-1", 2, "Bronchospasm")
    pump = await opened(page, "pump-1")
    await expect(pump.get_by_role("status")).to_have_text(re.compile(r"Stop confirmed in \d+ ms"))
    await pump.get_by_role("button", name="Resume").click()
    dialog = page.get_by_role("dialog", name="Resume on pump-1")
    await expect(dialog).to_contain_text(re.compile(r"Resume refused \(I4\): \S"))
    await dialog.get_by_role("button", name="Cancel").click()
    await pump.get_by_role("button", name="Symptoms resolved").click()
    await expect(pump.get_by_role("status")).to_have_text("Symptoms resolved recorded (I4)")
    await pump.get_by_role("button", name="Resume").click()
    await expect(dialog).to_contain_text("The rules give 50 ml/h (I2)")  # half of 100


async def test_i5_a_reassessment_to_grade_3_stops_for_observation(
    service: Service, browser: Browser
) -> None:
    """I5: every grade change in one stop is a reassessment; grade 3 opens the observation."""
    infusion = await service.running("pump-1", "MRN-0014", hours=1)
    page = await signed_in(browser, service, "nurse")
    await report_reaction(page, "pump-1", 2, "Other")
    pump = await opened(page, "pump-1")
    await expect(pump.get_by_role("status")).to_have_text(re.compile(r"Stop confirmed in \d+ ms"))
    await pump.get_by_role("button", name="Reassess").click()
    dialog = page.get_by_role("dialog", name="Reassess reaction on pump-1")
    await expect(dialog.get_by_role("radio", name="Grade 2")).to_be_checked()
    await dialog.get_by_role("radio", name="Grade 3").check()
    await dialog.get_by_role("button", name="Save reassessment").click()
    await expect(pump.get_by_role("status")).to_have_text("Reassessed: grade 3 (I5)")
    await expect(pump).to_contain_text("observation after a grade 3 or higher reaction (I5)")
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert (view["state"], view["reaction"]["max_grade"]) == ("stopped_observation", 3)


async def test_stop_infusion_asks_for_a_reason_and_stops_for_good(
    service: Service, browser: Browser
) -> None:
    infusion = await service.running("pump-1", "MRN-0015", hours=1)
    page = await signed_in(browser, service, "nurse")
    pump = await opened(page, "pump-1")
    await pump.get_by_role("button", name="Stop infusion").click()
    dialog = page.get_by_role("dialog", name="Stop infusion on pump-1")
    await dialog.get_by_role("button", name="Stop for good").click()  # no reason: not sent
    await expect(dialog).to_be_visible()
    assert (await service.pump("pump-1"))["state"] == "running"
    await dialog.get_by_label("Reason").fill("patient asked to stop")
    await dialog.get_by_role("button", name="Stop for good").click()
    await expect(pump.get_by_role("status")).to_have_text("Infusion stopped for good")
    await expect(pump).to_contain_text("Stopped for good")
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert (view["state"], view["stop_reason"]) == ("stopped", "patient asked to stop")
    assert (await service.pump("pump-1"))["state"] != "running"


async def test_l9_an_expired_bag_stops_the_pump_and_a_new_bag_goes_on_at_the_same_step(
    service: Service, browser: Browser
) -> None:
    """L9: the page shows the bag's expiry; at the limit the service stops the pump, the page
    offers "New bag", and the new bag (the volume still to give) goes on at the same step."""
    patient = await service.api(
        "POST", "/patients", "clinician", {"mrn": "MRN-0016", "weight_kg": 70}, 201
    )
    now = await service.now()
    infusion = await service.api(
        "POST",
        "/infusions",
        "clinician",
        {
            "patient_id": patient["id"],
            "pump_id": "pump-1",
            "bag_prepared_at": (now - timedelta(hours=14, minutes=30)).isoformat(),
            "premedication_at": (now - timedelta(hours=1)).isoformat(),
        },
        201,
    )
    await service.api("POST", f"/infusions/{infusion['id']}/start", "clinician", {})
    await service.advance(1)
    page = await signed_in(browser, service, "nurse")
    pump = await opened(page, "pump-1")
    expires = pump.get_by_role("definition").filter(has_text="(in ")
    await expect(expires).to_have_text(re.compile(r"\(in (29|30) min\)"))
    await expect(pump.get_by_role("button", name="New bag")).to_have_count(0)  # pump running

    await service.advance(31 * 60)
    await expect(pump).to_contain_text("L9: the bag is past its 15 h stability")
    assert (await service.pump("pump-1"))["state"] != "running"
    await pump.get_by_role("button", name="New bag").click()
    dialog = page.get_by_role("dialog", name="New bag on pump-1")
    await dialog.get_by_label("Bag prepared, minutes before now").fill("1000")  # past L9
    await dialog.get_by_role("button", name="Record new bag").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("L9")
    await dialog.get_by_label("Bag prepared, minutes before now").fill("")
    await dialog.get_by_role("button", name="Record new bag").click()
    await expect(dialog).to_be_hidden()
    await expect(pump.get_by_role("status")).to_contain_text("New bag recorded (L9)")
    view = await service.api("GET", f"/infusions/{infusion['id']}", "viewer")
    given = view["volume_infused_ml"]
    assert 0 < given < view["bag_ml"]
    await expect(pump).to_contain_text("0 ml of the ")
    await service.advance(1)
    resumed = await service.pump("pump-1")
    assert (resumed["state"], resumed["rate_ml_h"]) == ("running", 50)  # the same step
    await expect(pump.get_by_role("button", name="New bag")).to_have_count(0)
    expired = pump.get_by_role("listitem").filter(has_text="past its 15 h stability")
    await expired.get_by_role("button", name="Clear alarm").click()  # A1: the latched alarm
    await expect(expired).to_have_count(0)
    view = await service.api("GET", f"/infusions/{infusion['id']}", "viewer")
    assert "bag_expired" not in view["latched_alarms"]


async def test_a_clinician_cancels_a_planned_infusion_with_a_reason(
    service: Service, browser: Browser
) -> None:
    """A planned infusion that never started is cancelled with a reason; a nurse is not
    offered this."""
    patient = await service.api(
        "POST", "/patients", "clinician", {"mrn": "MRN-0017", "weight_kg": 70}, 201
    )
    infusion = await service.api(
        "POST", "/infusions", "clinician", {"patient_id": patient["id"], "pump_id": "pump-2"}, 201
    )
    nurse = await signed_in(browser, service, "nurse")
    await expect(await opened(nurse, "pump-2")).to_contain_text("Planned, not started")
    await expect(
        region(nurse, "pump-2").get_by_role("button", name="Cancel infusion")
    ).to_have_count(0)
    page = await signed_in(browser, service, "clinician")
    pump = await opened(page, "pump-2")
    await pump.get_by_role("button", name="Cancel infusion").click()
    dialog = page.get_by_role("dialog", name="Cancel infusion on pump-2")
    await dialog.get_by_role("button", name="Cancel the infusion").click()  # no reason: not sent
    await expect(dialog).to_be_visible()
    assert (await service.api("GET", f"/infusions/{infusion['id']}", "viewer"))[
        "state"
    ] == "planned"
    await dialog.get_by_label("Reason").fill("patient unwell today")
    await dialog.get_by_role("button", name="Cancel the infusion").click()
    await expect(dialog).to_be_hidden()
    await expect(pump.get_by_role("status")).to_have_text("Infusion 1 cancelled")
    await expect(pump.get_by_role("button", name="New infusion")).to_be_visible()
    assert (await service.api("GET", f"/infusions/{infusion['id']}", "viewer"))[
        "state"
    ] == "cancelled"


async def test_a1_a_pump_alarm_is_shown_once_and_the_nurse_resumes_at_the_same_rate(
    service: Service, browser: Browser
) -> None:
    """A1: the serial pump stops itself on an occlusion; the alarm shows once and a resume is
    refused naming A1; once the cause is gone the nurse's clear says so (a New Era pump cannot)
    and the resume runs at the rate before the alarm (no halving, no step)."""
    await service.running("pump-1", "MRN-0019", hours=1)
    page = await signed_in(browser, service, "nurse")
    pump = await opened(page, "pump-1")
    await expect(pump).to_contain_text("100 ml/h, pump running")
    await service.api("POST", "/sim/pumps/pump-1/faults", "admin", {"alarm": "occlusion"})
    await service.advance(1)
    occlusion = pump.get_by_role("listitem").filter(has_text=re.compile("occlusion", re.I))
    await expect(occlusion).to_have_count(1)
    await expect(pump).to_contain_text("0 ml/h")
    await pump.get_by_role("button", name="Resume").click()
    dialog = page.get_by_role("dialog", name="Resume on pump-1")
    await expect(dialog).to_contain_text("Resume refused (A1)")
    await expect(dialog.get_by_role("button", name=re.compile("^Resume at"))).to_be_hidden()
    await dialog.get_by_role("button", name="Cancel").click()

    await service.api("DELETE", "/sim/pumps/pump-1/faults/occlusion", "admin")
    await service.advance(1)
    # a New Era pump cannot say the cause is gone: the nurse's clear says so (A1)
    await occlusion.get_by_role("button", name="Clear alarm").click()
    await expect(pump.get_by_role("status")).to_contain_text("cleared (A1)")
    assert (await service.pump("pump-1"))["state"] != "running"  # a clear never starts it
    await pump.get_by_role("button", name="Resume").click()
    await expect(dialog).to_contain_text("The rules give 100 ml/h")
    await dialog.get_by_role("button", name="Resume at 100 ml/h").click()
    await expect(pump.get_by_role("status")).to_have_text("Resumed at 100 ml/h")
    await service.advance(1)  # the pump's status at the new instant read back (the run, A3)
    resumed = await service.pump("pump-1")
    assert (resumed["state"], resumed["rate_ml_h"]) == ("running", 100)
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a4_after_a_restart_the_nurse_says_whether_the_stop_was_a_reaction(
    service: Service, browser: Browser
) -> None:
    """A4: the service is killed; on its restart the pump is found stopped with no record why.
    The resume dialog asks whether it was a reaction; "no reaction" resumes at the rate
    before the stop, and "it was a reaction" opens the reaction dialog instead."""
    infusion = await service.running("pump-1", "MRN-0020", hours=1)
    await service.kill()
    await service.start()
    await service.advance(1)
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert any(a["kind"] == "pump_stopped_unexpectedly" for a in view["alarms"]), view["alarms"]
    page = await signed_in(browser, service, "nurse")
    pump = await opened(page, "pump-1")
    await pump.get_by_role("button", name="Resume").click()
    dialog = page.get_by_role("dialog", name="Resume on pump-1")
    await expect(dialog).to_contain_text("with no record why (A4): was it a reaction?")
    await dialog.get_by_role("button", name="It was a reaction: report it").click()
    await expect(page.get_by_role("dialog", name="Report reaction on pump-1")).to_be_visible()
    await (
        page.get_by_role("dialog", name="Report reaction on pump-1")
        .get_by_role("button", name="Cancel")
        .click()
    )
    await pump.get_by_role("button", name="Resume").click()
    await dialog.get_by_role("button", name="No reaction: resume at 100 ml/h").click()
    await expect(pump.get_by_role("status")).to_have_text("Resumed at 100 ml/h (no reaction, A4)")
    await service.advance(1)
    resumed = await service.pump("pump-1")
    assert (resumed["state"], resumed["rate_ml_h"]) == ("running", 100)


async def test_i11_a_reaction_after_completion_is_reported_and_moves_no_pump(
    service: Service, browser: Browser
) -> None:
    """I11: a delayed reaction after the infusion completed is reported from the page too;
    it moves no pump and counts for the course."""
    infusion = await service.running("pump-1", "MRN-0021", hours=7)
    assert (await service.api("GET", f"/infusions/{infusion}", "viewer"))["state"] == "completed"
    page = await signed_in(browser, service, "nurse")
    pump = await opened(page, "pump-1")
    await expect(pump).to_contain_text("Completed")
    await report_reaction(page, "pump-1", 1, "Other")
    await expect(pump.get_by_role("status")).to_have_text(
        "Grade 1 reaction recorded after completion; the pump was not touched (I11)"
    )
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert [r["grade"] for r in view["reactions"]] == [1]


async def test_d3_a_clinician_starts_without_premedication_giving_a_reason(
    service: Service, browser: Browser
) -> None:
    """D3: without premedication a clinician's override reason starts the infusion, and the
    reason is in the audit trail."""
    patient = await service.api(
        "POST", "/patients", "clinician", {"mrn": "MRN-0022", "weight_kg": 70}, 201
    )
    infusion = await service.api(
        "POST", "/infusions", "clinician", {"patient_id": patient["id"], "pump_id": "pump-2"}, 201
    )
    page = await signed_in(browser, service, "clinician")
    pump = await opened(page, "pump-2")
    await pump.get_by_role("button", name="Start").click()
    dialog = page.get_by_role("dialog", name="Start infusion on pump-2")
    await dialog.get_by_label(re.compile("^Override reason")).fill("premedication given on ward")
    await dialog.get_by_role("button", name="Start infusion").click()
    await expect(pump.get_by_role("status")).to_have_text("Started at 50 ml/h")
    trail = await service.api("GET", f"/infusions/{infusion['id']}/events", "viewer")
    assert "premedication given on ward" in str(trail)


async def test_an_outcome_shown_is_old_news_once_somebody_else_acts(
    service: Service, browser: Browser
) -> None:
    """The region's "Stop confirmed" stays while nothing else happens to the infusion, and goes
    once another person acts on it (here a clinician holds the escalation through the API)."""
    infusion = await service.running("pump-1", "MRN-0023", hours=1)
    page = await signed_in(browser, service, "nurse")
    pump = await opened(page, "pump-1")
    await report_reaction(page, "pump-1", 1, "Other")
    await expect(pump.get_by_role("status")).to_contain_text("Stop confirmed in")
    await service.api("POST", f"/infusions/{infusion}/hold", "clinician")
    await expect(pump).to_contain_text("escalation held (L7)")
    await expect(pump.get_by_role("status")).to_have_count(0)


async def test_l7_l9_an_ended_infusion_shows_no_bag_expiry_and_no_hold(
    service: Service, browser: Browser
) -> None:
    """L9, L7: a live infusion's region shows its bag's expiry and its held escalation; once
    the infusion has ended (completed, or stopped for good) its region shows neither, though
    the service still reports the bag's expiry and the hold. The page read an undeclared
    `live`, the <p id="live"> element, and showed both on ended infusions (issue 17)."""
    completed = await service.running("pump-2", "MRN-0024", hours=7)
    infusion = await service.running("pump-1", "MRN-0025", hours=1)
    await service.api("POST", f"/infusions/{infusion}/hold", "clinician")
    page = await signed_in(browser, service, "nurse")
    pump = await opened(page, "pump-1")
    bag_expires = pump.get_by_role("term").filter(has_text="Bag expires")
    await expect(bag_expires).to_have_count(1)
    await expect(pump).to_contain_text("escalation held (L7)")

    ended = await opened(page, "pump-2")
    await expect(ended).to_contain_text("Completed")
    await expect(ended.get_by_role("term").filter(has_text="Next step")).to_have_count(1)
    await expect(ended.get_by_role("term").filter(has_text="Bag expires")).to_have_count(0)
    view = await service.api("GET", f"/infusions/{completed}", "viewer")
    assert (view["state"], view["bag_expires_at"] is not None) == ("completed", True)

    await service.api(
        "POST", f"/infusions/{infusion}/stop", "nurse", {"reason": "patient asked to stop"}
    )
    await expect(tile(page, "pump-1")).to_contain_text("Stopped")
    pump = await opened(page, "pump-1")
    await expect(pump).to_contain_text("Stopped for good")
    await expect(bag_expires).to_have_count(0)
    await expect(pump).not_to_contain_text("held (L7)")
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert (view["state"], view["held"], view["bag_expires_at"] is not None) == (
        "stopped",
        True,
        True,
    )
    assert page.errors == []  # type: ignore[attr-defined]


def state_of(pump: Locator) -> Locator:
    """The region's State line (the definition after the term "State")."""
    return pump.locator('dt:text-is("State") + dd')


async def test_a1_an_occlusion_pauses_the_infusion_naming_the_rule_and_a_reaction_is_reported(
    service: Service, browser: Browser
) -> None:
    """A1: a pump alarm pauses the infusion (before, its state stayed "running" at 0 ml/h); the
    State line says so with the rule's id and words. "Report reaction" is offered as while
    running, beside Resume; a reaction reported then makes it a reaction's pause (I2), with
    Reassess in place of "Report reaction"."""
    infusion = await service.running("pump-1", "MRN-0026", hours=1)
    page = await signed_in(browser, service, "nurse")
    pump = await opened(page, "pump-1")
    await expect(state_of(pump)).to_have_text("Running")
    await service.api("POST", "/sim/pumps/pump-1/faults", "admin", {"alarm": "occlusion"})
    await service.advance(1)
    await expect(state_of(pump)).to_have_text("Paused (A1): pump alarm: occlusion")
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert (view["state"], view["state_reason"], view["reaction"]) == (
        "paused",
        {"rule": "A1", "message": "pump alarm: occlusion"},
        None,
    )
    await expect(pump.get_by_role("button", name="Report reaction")).to_be_visible()
    await expect(pump.get_by_role("button", name="Resume")).to_be_visible()
    await expect(pump.get_by_role("button", name="Reassess")).to_have_count(0)
    await expect(pump.get_by_role("listitem").filter(has_text="Occlusion (A1)")).to_have_count(1)
    await screenshot(page, "room-paused-a1")

    await report_reaction(page, "pump-1", 2, "Other")
    await expect(pump.get_by_role("status")).to_have_text(re.compile(r"grade 2 reaction recorded$"))
    await expect(state_of(pump)).to_have_text(re.compile(r"^Paused \(I2\): \S"))
    await expect(pump.get_by_role("button", name="Report reaction")).to_have_count(0)
    await expect(pump.get_by_role("button", name="Reassess")).to_be_visible()
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert (view["state"], view["state_reason"]["rule"]) == ("paused", "I2")
    assert [r["grade"] for r in view["reactions"]] == [2]
    assert page.errors == []  # type: ignore[attr-defined]


async def test_d2_a_start_sooner_than_the_schedule_allows_needs_a_clinicians_reason(
    service: Service, browser: Browser
) -> None:
    """D2: the patient's second infusion, started right after the first completed, is refused
    naming D2 in the Start dialog; the dialog then asks for a schedule override reason, and the
    clinician's reason starts it (audited). The premedication typed once is recorded once."""
    first = await service.running("pump-1", "MRN-0027", hours=7)
    done = await service.api("GET", f"/infusions/{first}", "viewer")
    assert done["state"] == "completed"
    second = await service.api(
        "POST",
        "/infusions",
        "clinician",
        {"patient_id": done["patient_id"], "pump_id": "pump-1"},
        201,
    )
    page = await signed_in(browser, service, "clinician")
    pump = await opened(page, "pump-1")
    await expect(state_of(pump)).to_have_text("Planned, not started")
    await pump.get_by_role("button", name="Start").click()
    dialog = page.get_by_role("dialog", name="Start infusion on pump-1")
    schedule = dialog.get_by_label("Schedule override reason (D2)")
    await expect(schedule).to_be_hidden()
    await dialog.get_by_label("Premedication given, minutes before now").fill("45")
    await dialog.get_by_role("button", name="Start infusion").click()
    await expect(dialog.get_by_role("alert")).to_have_text(
        re.compile(r"^Refused \(D2\): infusion 2 is sooner than the schedule allows: \S")
    )
    await expect(schedule).to_be_focused()
    await screenshot(page, "start-refused-d2")
    assert (await service.api("GET", f"/infusions/{second['id']}", "viewer"))["state"] == "planned"

    await schedule.fill("patient travels next week; agreed with the oncologist")
    await dialog.get_by_role("button", name="Start infusion").click()
    await expect(dialog).to_be_hidden()
    await expect(pump.get_by_role("status")).to_have_text(re.compile(r"^Started at \d+ ml/h$"))
    view = await service.api("GET", f"/infusions/{second['id']}", "viewer")
    assert view["state"] in {"starting", "running"}
    trail = await service.api("GET", f"/infusions/{second['id']}/events", "viewer")
    gates = [e for e in trail if e["type"] == "start_gate" and e["rule"] == "D2"]
    assert len(gates) == 1
    assert "agreed with the oncologist" in str(gates[0]["data"])
    assert [e["type"] for e in trail].count("premedication") == 1
    assert page.errors == []  # type: ignore[attr-defined]
