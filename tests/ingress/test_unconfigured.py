"""Without their secrets the admin API and the Stripe webhook are off (503),
and the secrets come from the environment."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from schema.catalog import parse_config
from schema.settings import Settings
from tests.support.gateway import running_gateway


def test_admin_api_and_stripe_webhook_answer_503_until_configured(tmp_path: Path) -> None:
    with running_gateway(parse_config({}, {}), tmp_path) as gateway:
        admin = httpx.post(f"{gateway.url}/admin/coupons", json={"code": "X", "credits": "1"},
                           headers={"authorization": "Bearer anything"})
        webhook = httpx.post(f"{gateway.url}/webhooks/stripe", content=b"{}", headers={"stripe-signature": "t=1,v1=00"})
    for response, variable in ((admin, "GATEWAYZ_ADMIN_TOKEN"), (webhook, "GATEWAYZ_STRIPE_WEBHOOK_SECRET")):
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["type"] == "service_unavailable"
        assert variable in error["message"]


def test_secrets_and_the_exchange_rate_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAYZ_ADMIN_TOKEN", "admin-secret")
    monkeypatch.setenv("GATEWAYZ_STRIPE_WEBHOOK_SECRET", "whsec_abc")
    monkeypatch.setenv("GATEWAYZ_CREDITS_PER_USD", "2.5")
    settings = Settings()
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "admin-secret"
    assert settings.stripe_webhook_secret is not None
    assert settings.stripe_webhook_secret.get_secret_value() == "whsec_abc"
    assert str(settings.credits_per_usd) == "2.5"
    assert "admin-secret" not in repr(settings) and "whsec_abc" not in repr(settings)
