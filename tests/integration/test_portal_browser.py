"""The portal in a real headless Chromium (Debian's, driven by Playwright) against the real front,
tenant_svc and PostgreSQL: sign in, agents, API keys, a call's transcript, read-only viewers and
inert XSS. A failing test leaves a screenshot in build/test-artifacts/portal/."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import timestamp_pb2

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings
from tests.integration.livekit_sip_harness import fresh_number
from tests.integration.rest_harness import rest_front
from tests.integration.tenant_harness import TenantApi, tenant_api

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "portal"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"
)


@pytest.fixture(scope="module")
async def api(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, Path(tmp_path_factory.mktemp("dev-auth"))) as running:
        yield running


@pytest.fixture(scope="module")
async def url(api: TenantApi) -> AsyncIterator[str]:
    async with rest_front(api.address) as base:
        yield base


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def page_for(browser: object, name: str) -> AsyncIterator[object]:
    """A fresh browser context and page; a screenshot is kept if the block fails."""
    context = await browser.new_context()  # type: ignore[attr-defined]
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
        assert not errors, f"script errors on the page: {errors}"
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        raise
    finally:
        await context.close()


UNLABELLED = (
    "[...document.querySelectorAll('input, textarea, select')].filter((e) => !e.labels.length).length"
)


async def assert_labelled(page: object) -> None:
    """Every form control has a label a screen reader can announce."""
    assert await page.evaluate(UNLABELLED) == 0  # type: ignore[attr-defined]


async def _record_call(api: TenantApi, tenant: str) -> None:
    await api.stub.CreateCall(
        svc.CreateCallRequest(
            parent=f"tenants/{tenant}",
            call_id="call-1",
            call=pb.Call(
                agent=f"tenants/{tenant}/agents/front-desk",
                status=pb.CALL_STATUS_COMPLETED,
                direction=pb.CALL_DIRECTION_INBOUND,
                start_time=timestamp_pb2.Timestamp(seconds=1_800_000_000),
                end_reason="caller_hangup",
                turns=[
                    pb.CallTurn(
                        index=1,
                        caller_text=XSS,
                        agent_text="Hello, how can",
                        interrupted=True,
                        stt_final_ms=120,
                    ),
                    pb.CallTurn(index=2, caller_text="Bye", agent_text="Goodbye", llm_first_token_ms=333),
                ],
            ),
        ),
        metadata=api.md(tenant, "agent"),
    )


async def test_an_admin_manages_agents_keys_and_reads_a_transcript(
    api: TenantApi, url: str, browser: object
) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    await _record_call(api, t)
    async with page_for(browser, "admin") as page:
        await page.goto(f"{url}/portal/#token={api.token(t, 'admin')}&tenant={t}")
        await page.get_by_role("heading", name="Agents").wait_for()
        assert "token=" not in page.url  # the credential leaves the address bar

        await page.get_by_role("link", name="New agent").click()
        await page.get_by_label("Agent id").fill("sales")
        await page.get_by_label("Prompt").fill(f"Sell kindly. {XSS}")
        await page.get_by_label("Greeting").fill("Hi!")
        await page.get_by_role("button", name="Create agent").click()
        await page.get_by_role("link", name="sales").wait_for()

        await page.get_by_role("link", name="sales").click()
        await page.get_by_role("heading", name="Agent sales").wait_for()
        await assert_labelled(page)
        await page.get_by_label("Greeting").fill("Hello from the portal")
        await page.get_by_role("button", name="Save").click()
        await page.get_by_text("Agent saved.").wait_for()
        agent = await api.stub.GetAgent(
            svc.GetAgentRequest(name=f"tenants/{t}/agents/sales"), metadata=api.md(t, "viewer")
        )
        assert agent.greeting == "Hello from the portal" and agent.revision == 2
        assert XSS in await page.get_by_label("Prompt").input_value()

        await page.get_by_role("link", name="API keys").click()
        await page.get_by_role("heading", name="API keys").wait_for()
        await assert_labelled(page)
        await page.get_by_label("Name", exact=True).fill("ci")
        await page.get_by_label("viewer").check()
        await page.get_by_role("button", name="Create key").click()
        secret = await page.locator("#new-key").text_content()
        assert secret is not None and secret.startswith("vai_")
        await page.get_by_role("button", name="Revoke ci").click()
        await page.get_by_text("Revoked").wait_for()

        await page.get_by_role("link", name="Calls").click()
        await page.get_by_role("heading", name="Calls").wait_for()
        await page.get_by_role("link", name="call-1").click()
        await page.get_by_text("(interrupted)").wait_for()
        assert await page.get_by_role("cell", name="120 ms").count() == 1
        assert await page.get_by_role("cell", name="333 ms").count() == 1
        assert await page.get_by_text(XSS).count() == 1  # shown as text, not markup
        assert await page.evaluate("window.__xss === undefined")

        await page.get_by_role("link", name="Audit log").click()
        await page.get_by_role("cell", name="UpdateAgent").first.wait_for()

        await page.get_by_role("link", name="Phone numbers").click()
        await page.get_by_role("heading", name="Add a number").wait_for()
        await assert_labelled(page)
        number = fresh_number()
        await page.get_by_label("Number (E.164)").fill(number)
        await page.get_by_label("Agent that answers").select_option(label="sales")
        await page.get_by_role("button", name="Add number").click()
        await page.get_by_role("cell", name=number, exact=True).wait_for()


async def test_the_api_reference_is_rendered_from_the_spec(url: str, browser: object) -> None:
    async with page_for(browser, "reference") as page:
        await page.goto(f"{url}/docs")
        await page.get_by_role("heading", name="TenantService").wait_for()
        assert (
            await page.get_by_text("/v1/tenants/{tenant}/agents/{agent}").count() >= 3
        )  # get, patch, delete
        await page.get_by_role("heading", name="voiceai.tenant.v1.Agent", exact=True).wait_for()


async def test_a_viewer_sees_no_write_controls(api: TenantApi, url: str, browser: object) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    key = await api.stub.CreateApiKey(
        svc.CreateApiKeyRequest(parent=f"tenants/{t}", api_key=pb.ApiKey(roles=["viewer"])),
        metadata=api.md(t, "admin"),
    )
    async with page_for(browser, "viewer") as page:
        await page.goto(f"{url}/portal/")
        await page.get_by_label("Tenant id").fill(t)
        await assert_labelled(page)
        await page.get_by_label("API key or token").fill(key.key)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("link", name="front-desk").wait_for()
        assert await page.get_by_role("link", name="New agent").count() == 0
        assert not await page.get_by_role("link", name="API keys").is_visible()
        await page.get_by_role("link", name="front-desk").click()
        await page.get_by_role("heading", name="Agent front-desk").wait_for()
        assert await page.get_by_role("button").filter(has_text="Save").count() == 0
        assert await page.get_by_role("button").filter(has_text="Delete").count() == 0
        assert await page.get_by_label("Prompt").get_attribute("readonly") is not None
        await page.get_by_role("link", name="Phone numbers").click()
        await page.get_by_role("heading", name="Phone numbers").wait_for()
        assert await page.get_by_role("button", name="Add number").count() == 0


async def test_a_refused_credential_is_said_in_words(api: TenantApi, url: str, browser: object) -> None:
    async with page_for(browser, "refused") as page:
        await page.goto(f"{url}/portal/")
        await page.get_by_label("Tenant id").fill("nobody")
        await page.get_by_label("API key or token").fill("vai_aaaaaaaaaaaa_" + "b" * 43)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("alert").filter(has_text="Sign-in failed").wait_for()
